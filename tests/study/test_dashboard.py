"""optuna-dashboard opens a mimax database untouched and shows the study as mimax recorded it, its
objectives by their metric names (a study launched before mimax named them gets them when it resumes).

The dashboard's WSGI app is called in-process (no server, no network) through its JSON API.
"""

from __future__ import annotations

import io
import json
from wsgiref.util import setup_testing_defaults

import optuna
import optuna_dashboard
import pytest
import sqlalchemy

from engine_helpers import SPACES, query, run

pytestmark = pytest.mark.slow


def get_json(app, path: str) -> dict:
    environ: dict = {"REQUEST_METHOD": "GET", "PATH_INFO": path, "QUERY_STRING": "", "wsgi.input": io.BytesIO()}
    setup_testing_defaults(environ)
    status: list[str] = []
    body = b"".join(app(environ, lambda s, headers, exc_info=None: status.append(s)))
    assert status and status[0].startswith("200"), (path, status, body[:500])
    return json.loads(body)


def test_dashboard_lists_the_study_with_mimax_params_and_values(tmp_path, sqlite_url):
    space = tmp_path / "three-random.yaml"
    text = (SPACES / "tiny-random.yaml").read_text()
    assert "\ntrials: 1\n" in text
    space.write_text(text.replace("\ntrials: 1\n", "\ntrials: 3\n"))
    r = run("launch", space, "--name", "dash", "--db", sqlite_url, "--results-dir", tmp_path / "res", "--quiet",
            cwd=tmp_path)
    assert r.returncode == 0, r.stderr

    # The oracle: mimax's own tables. One seed, so an Optuna trial's value is its replicate's final accuracy.
    expected = {}
    for number, config, acc in query(sqlite_url, """
            SELECT t.optuna_trial_number, t.config_json, e.probe_accuracy FROM mimax_trials t
            JOIN mimax_evaluations e ON e.trial_id = t.id
            WHERE e.step = (SELECT MAX(step) FROM mimax_evaluations WHERE trial_id = t.id)"""):
        expected[number] = (json.loads(config)["train"]["lr"], acc)
    assert sorted(expected) == [0, 1, 2] and all(acc is not None for _, acc in expected.values())

    app = optuna_dashboard.wsgi(optuna.storages.RDBStorage(sqlite_url))
    studies = get_json(app, "/api/studies")["study_summaries"]
    assert [s["study_name"] for s in studies] == ["mimax:dash"]
    assert studies[0]["directions"] == ["maximize"]

    detail = get_json(app, f"/api/studies/{studies[0]['study_id']}")
    assert detail["name"] == "mimax:dash"
    assert detail["objective_names"] == ["probe_accuracy"]  # not "Objective 0"
    shown = {t["number"]: t for t in detail["trials"]}
    assert sorted(shown) == sorted(expected)
    for number, (lr, acc) in expected.items():
        t = shown[number]
        assert t["state"] == "Complete"
        params = {p["name"]: p for p in t["params"]}
        assert set(params) == {"train.lr"}
        assert float(params["train.lr"]["param_external_value"]) == pytest.approx(lr, rel=1e-12)
        assert params["train.lr"]["distribution"]["log"] is True
        assert t["values"] == [pytest.approx(acc, rel=1e-9)]
    best = max(expected.values(), key=lambda v: v[1])[1]
    assert [b["values"] for b in detail["best_trials"]] == [[pytest.approx(best, rel=1e-9)]]


def test_a_resumed_study_gets_its_metric_names(tmp_path, sqlite_url):
    """A study whose Optuna study has no metric names (launched before mimax named them) gets them from
    the searcher a resume builds."""
    from mimax.search_spaces import load_space
    from mimax.study.searcher import StudySearcher
    from mimax.storage.store import Store

    space = SPACES / "tiny-random.yaml"
    r = run("launch", space, "--name", "old", "--db", sqlite_url, "--results-dir", tmp_path / "res", "--quiet",
            cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert optuna.load_study(study_name="mimax:old", storage=sqlite_url).metric_names == ["probe_accuracy"]
    engine = sqlalchemy.create_engine(sqlite_url)
    with engine.begin() as conn:
        conn.execute(sqlalchemy.text("DELETE FROM study_system_attributes WHERE key = 'study:metric_names'"))
    engine.dispose()
    assert optuna.load_study(study_name="mimax:old", storage=sqlite_url).metric_names is None

    with Store(sqlite_url, create=False) as store:
        StudySearcher(store=store, study=store.require_study("old"), space=load_space(str(space)),
                      target_configs=1, session=1)
    app = optuna_dashboard.wsgi(optuna.storages.RDBStorage(sqlite_url))
    (summary,) = get_json(app, "/api/studies")["study_summaries"]
    assert get_json(app, f"/api/studies/{summary['study_id']}")["objective_names"] == ["probe_accuracy"]
