"""``mimax decide``: the plan read from a database (dry run), its stopping rules, and a decide run
SIGKILLed mid-batch that, run again, finishes with no seed lost or duplicated. The error control is
tested by simulation in tests/analysis/test_sequential.py."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from engine_helpers import SPACES, evaluations, kill_group, query, run, start, trials, wait_for

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "analysis"))
from planted import planted_study  # noqa: E402

from mimax.cli import main  # noqa: E402


def claims(tmp_path: Path, *lines: str) -> Path:
    path = tmp_path / "claims.yaml"
    path.write_text("claims:\n" + "".join(lines))
    return path


def order(cid: str, study: str, a: str, b: str, extra: str = "") -> str:
    return (f"  - {{id: {cid}, finding: f, study: {study}, metric: probe_accuracy, "
            f"order: {{factor: critic, a: {a}, op: '>', b: {b}}}{', ' + extra if extra else ''}}}\n")


@pytest.fixture
def planted(tmp_path):
    url = f"sqlite:///{tmp_path / 'd.db'}"

    def rec(effect):
        def record(lv, seed, step, frac):
            final = 0.80 + (effect if lv["critic"] == "bilinear" else 0.0) + 0.01 * (seed - 1)
            return {"probe_accuracy": 0.1 + (final - 0.1) * frac, "wall_s": 30.0 * frac, "pack_size": 1}
        return record

    planted_study(url, "clear", critics=("bilinear", "concat"), estimators=("nce",), seeds=3, record=rec(0.2),
                  optuna_study=True)
    planted_study(url, "close", critics=("bilinear", "concat"), estimators=("nce",), seeds=3, record=rec(0.012),
                  optuna_study=True)
    planted_study(url, "none", critics=("bilinear", "concat"), estimators=("nce",), seeds=3, record=rec(0.0),
                  optuna_study=True)
    return url


def test_the_plan_names_configurations_seeds_and_time(planted, tmp_path, capsys):
    path = claims(tmp_path, *(order(s, s, "bilinear", "concat", f"family: {s}") for s in ("clear", "close", "none")))
    code = main(["decide", str(path), "--db", planted, "--dry-run", "--json", "--max-seeds", "12", "--looks", "3"])
    assert code == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["ladder"] == [3, 6, 12]
    got = {c["id"]: c for c in plan["claims"]}
    assert got["clear"]["verdict"] == "holds" and got["clear"]["decided_at"] == 3 and got["clear"]["action"] is None
    # +0.012 against a seed sd of 0.01: open at 3 seeds, n_needed within reach: the next look's seeds
    close = got["close"]
    assert close["verdict"] == "open" and close["status"] == "open" and 3 < close["n_needed"] <= 12
    assert close["action"] == {"kind": "extend", "study": "close", "seeds": 6, "configs": ["0", "1"],
                               "preset": None, "budget": None, "trials": 6, "seconds": pytest.approx(6 * 30.0)}
    # exactly no difference: no number of seeds decides "bilinear > concat"
    assert got["none"]["status"] == "futile" and got["none"]["action"] is None
    assert plan["actions"] == [close["action"]] and plan["seconds"] == pytest.approx(180.0)


def test_the_docs_example_runs_as_written(planted, tmp_path, capsys, monkeypatch):
    doc = (Path(__file__).resolve().parents[2] / "docs" / "VERIFY.md").read_text()
    example = doc.split("# decide.yaml\n", 1)[1].split("```", 1)[0]
    command = "$ mimax decide decide.yaml --db sqlite:///planted-decide.db --dry-run --max-seeds 12 --looks 3\n"
    shown = doc.split(command, 1)[1].split("```", 1)[0]
    monkeypatch.chdir(tmp_path)
    Path("decide.yaml").write_text(example)
    assert main(["decide", "decide.yaml", "--db", planted, "--dry-run", "--max-seeds", "12", "--looks", "3"]) == 0
    assert [line.rstrip() for line in capsys.readouterr().out.splitlines()] == [
        line.rstrip() for line in shown.splitlines()]


def test_a_claim_needing_more_than_max_seeds_is_futile_with_its_number(planted, tmp_path, capsys):
    path = claims(tmp_path, order("close", "close", "bilinear", "concat"))
    assert main(["decide", str(path), "--db", planted, "--dry-run", "--json", "--max-seeds", "4", "--looks", "2"]) == 0
    c = json.loads(capsys.readouterr().out)["claims"][0]
    assert c["status"] == "futile" and f"needs {c['n_needed']} seeds" in c["note"] and c["n_needed"] > 4


@pytest.mark.parametrize("args, message", [
    (["--first", "1"], "--first: expected 2 ≤ --first ≤ --max-seeds"),
    (["--max-seeds", "0"], "argument --max-seeds: expected a whole number ≥ 1, got '0'"),
    (["--hours", "0"], "--hours: expected a number of hours > 0"),
])
def test_bad_options_are_one_line_and_exit_2(planted, tmp_path, capsys, args, message):
    path = claims(tmp_path, order("close", "close", "bilinear", "concat"))
    try:
        code = main(["decide", str(path), "--db", planted, "--dry-run", *args])
    except SystemExit as e:  # argparse's own checks exit through Parser.error
        code = e.code
    assert code == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


@pytest.mark.slow
def test_decide_killed_mid_batch_then_run_again_loses_and_duplicates_no_seed(tmp_path, sqlite_url):
    name = "dk"
    r = run("launch", SPACES / "decide-grid.yaml", "--name", name, "--db", sqlite_url, "--results-dir", tmp_path / "res",
            "--quiet", cwd=tmp_path, timeout=400)
    assert r.returncode == 0, r.stderr
    values = {v for (v,) in query(sqlite_url, """SELECT json_extract(e.metrics, '$.probe_accuracy') FROM mimax_evaluations e
                                                 JOIN mimax_trials t ON t.id = e.trial_id""")}
    assert len(values) == 1  # the identity encoder: one number, so "probe_accuracy > it" stays open
    path = claims(tmp_path, f"  - {{id: c, finding: f, study: {name}, metric: probe_accuracy, "
                            f"versus: {{op: '>', value: {values.pop()!r}}}}}\n")
    args = ("decide", path, "--db", sqlite_url, "--max-seeds", "5", "--looks", "2", "--max-concurrent", "1",
            "--results-dir", tmp_path / "res", "--quiet")
    proc = start(*args, cwd=tmp_path, log=tmp_path / "decide.log")

    def mid_batch():
        ts = trials(sqlite_url, name)
        new = [k for k in ts if int(k.rsplit("-s", 1)[1]) >= 3]
        return new and any(ts[k]["state"] == "completed" for k in new) and any(
            ts[k]["state"] != "completed" for k in new)

    try:
        wait_for(mid_batch, timeout=300, proc=proc, every=0.05)
    finally:
        kill_group(proc)
    before = trials(sqlite_url, name)
    before_evals = evaluations(sqlite_url, name)
    r = run(*args, cwd=tmp_path, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:] + (tmp_path / "decide.log").read_text()[-2000:]
    after = trials(sqlite_url, name)
    assert sorted(after) == sorted(f"c{c:04d}-s{s}" for c in range(2) for s in range(5))  # none lost, none twice
    assert all(t["state"] == "completed" for t in after.values())
    for key, t in before.items():
        if t["state"] == "completed":  # a trial that had ended is not run again
            assert after[key]["ended_at"] == t["ended_at"]
            assert all(evaluations(sqlite_url, name)[(key, s)] == before_evals[(key, s)] for s in range(0, 1501, 250))
    rows = query(sqlite_url, "SELECT t.trial_key, e.step FROM mimax_evaluations e JOIN mimax_trials t ON t.id = e.trial_id")
    assert sorted(rows) == sorted((k, s) for k in after for s in range(0, 1501, 250))
    assert "open at 5 seeds, the ladder's last point" in r.stdout


def test_an_unfinished_study_at_the_preferred_budget_is_finished_first(tmp_path, capsys):
    """The reference database's case: fig3-critics-paper-steps was stopped part-way, so verify reads
    fig3-critics-cpu (which stops before the endpoint) and the plan finishes the study no claim reads yet
    (a KeyError before: the plan looked that study up among the ones the claims read)."""
    import sqlite3

    db = tmp_path / "d.db"
    url = f"sqlite:///{db}"
    planted_study(url, "fig3-critics-cpu", seeds=3, steps=(0, 1500, 3000))
    planted_study(url, "fig3-critics-paper-steps", seeds=3, steps=(0, 1000, 2000))
    with sqlite3.connect(db) as con:
        con.execute("UPDATE mimax_studies SET status = 'running' WHERE name = 'fig3-critics-paper-steps'")
    con.close()
    path = tmp_path / "c.yaml"
    path.write_text("budget: [paper-steps, cpu]\nclaims:\n  - {id: c, finding: f, preset: fig3-critics, "
                    "metric: probe_accuracy, order: {factor: critic, a: bilinear, op: '>', b: concat}}\n")
    assert main(["decide", str(path), "--db", url, "--dry-run", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    c = plan["claims"][0]
    assert c["study"] == "fig3-critics-cpu" and c["verdict"] == "untestable"
    assert "fig3-critics-paper-steps is running" in c["note"]
    assert plan["actions"] == [{"kind": "extend", "study": "fig3-critics-paper-steps", "seeds": 3, "configs": None,
                                "preset": None, "budget": None, "trials": 0, "seconds": None}]
