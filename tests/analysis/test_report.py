"""mimax.analysis.figures and mimax.analysis.report on planted-truth databases.

Oracles: the planted database read back with plain sqlite3 and numpy (means, sample sds, bias /
variance / MSE by a loop), the planted effect itself, and a headless browser for the rendered page."""

from __future__ import annotations

import base64
import dataclasses
import json
import math
import os
import re
import sqlite3
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from planted import planted_study
from requires import require

from mimax.analysis import figures as F
from mimax.analysis.cli import analyze
from mimax.analysis.load import load
from mimax.analysis.report import write_report

CHROMIUM = Path("/usr/bin/chromium")
N_BOOT = 500


# ---- oracles -------------------------------------------------------------------------------------


def sql_rows(path: Path, study: str) -> list[dict]:
    """Every evaluation of ``study`` with its trial's key, state and decoded config (plain sqlite3)."""
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = con.execute(
            """SELECT t.trial_key, t.state, t.config_json, t.replicate_group, e.step, e.probe_accuracy,
                      e.bound_test, e.metrics
               FROM mimax_evaluations e JOIN mimax_trials t ON t.id = e.trial_id
               JOIN mimax_studies s ON s.id = t.study_id WHERE s.name = ?""", (study,)).fetchall()
    finally:
        con.close()
    keys = ("trial_key", "state", "config", "group", "step", "probe_accuracy", "bound_test", "metrics")
    out = [dict(zip(keys, r)) for r in rows]
    for r in out:
        r["config"], r["metrics"] = json.loads(r["config"]), json.loads(r["metrics"])
    return out


def sql_finals(path: Path, study: str) -> list[dict]:
    """The last evaluation (highest step) of each completed trial."""
    last = {}
    for r in sql_rows(path, study):
        if r["state"] == "completed" and (r["trial_key"] not in last or r["step"] > last[r["trial_key"]]["step"]):
            last[r["trial_key"]] = r
    return list(last.values())


def gid_artists(fig, prefix: str, kind: str):
    out = []
    for ax in fig.axes:
        artists = ax.lines if kind == "line" else ax.collections
        out += [a for a in artists if (a.get_gid() or "").startswith(prefix)]
    return out


def band_limits(poly, xs) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper edge of a fill_between polygon at each x in ``xs``."""
    v = np.concatenate([p.vertices for p in poly.get_paths()])
    lo = np.array([v[np.isclose(v[:, 0], x), 1].min() for x in xs])
    hi = np.array([v[np.isclose(v[:, 0], x), 1].max() for x in xs])
    return lo, hi


# ---- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """Critic × estimator, 10 seeds, +5 points of accuracy planted on the concat critic; one trial
    failed early (it must not count); analysed and reported once."""
    root = tmp_path_factory.mktemp("report")
    db = root / "planted.db"
    url = f"sqlite:///{db}"
    planted_study(url, "fig3", effect={"critic": {"concat": 0.05}}, seeds=10, failed=["c0000-s9"])
    data = load(url, "fig3")
    results = analyze(data, url, n_boot=N_BOOT)
    paths = write_report(data, results, root / "out")
    return {"db": db, "url": url, "data": data, "results": results, "paths": paths}


def _report_text(study) -> str:
    return study["paths"]["html"].read_text(encoding="utf-8")


# ---- the report ----------------------------------------------------------------------------------


def test_report_files(study):
    p = study["paths"]
    assert p["html"].name == "report.html" and p["html"].stat().st_size > 0
    assert p["md"].name == "report.md" and p["md"].stat().st_size > 0
    stems = {f.stem for f in p["figures"].iterdir()}
    assert {"curves-probe_accuracy", "curves-bound_test", "curves-bound_train", "final-scatter",
            "conditioning"} <= stems
    for stem in stems:  # every figure in both formats, each a real file of its kind
        assert (p["figures"] / f"{stem}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert b"<svg" in (p["figures"] / f"{stem}.svg").read_bytes()[:2000]
    assert "calibration" not in stems and "adversarial" not in stems  # digits data, infomax training


def test_planted_critic_effect_is_reported_with_its_numbers(study):
    finals = sql_finals(study["db"], "fig3")
    acc = defaultdict(list)
    for r in finals:
        acc[r["config"]["critic"]["name"]].append(r["probe_accuracy"])
    means = {k: float(np.mean(v)) for k, v in acc.items()}
    assert max(means, key=means.get) == "concat"
    html_text = _report_text(study)
    head = (f"critic: concat has the highest mean probe accuracy ({means['concat']:.3f} ± "
            f"{np.std(acc['concat'], ddof=1):.3f} sd, n={len(acc['concat'])})")
    assert head in html_text
    for other in ("bilinear", "separable"):
        diff = means["concat"] - means[other]
        assert abs(diff - 0.05) < 0.02  # what was planted (noise sd 0.01 per trial)
        m = re.search(rf"concat − {other} = \+(\d\.\d{{3}}) \[(−?\d\.\d+), (−?\d\.\d+)\] "
                      r"\(95% bootstrap CI, excludes 0\)", html_text)
        assert m, f"no CI sentence for concat − {other}"
        shown, lo, hi = (float(g.replace("−", "-")) for g in m.groups())
        assert shown == pytest.approx(round(diff, 3), abs=1e-9)
        assert 0 < lo <= diff <= hi
    # nothing was planted on the estimator: its difference must not be called clear
    assert re.search(r"(nce − nwj|nwj − nce) = [+−]\d\.\d{3} \[−\d\.\d{3}, \d\.\d{3}\] "
                     r"\(95% bootstrap CI, includes 0", html_text)
    n_completed = len(finals)
    assert f"across {n_completed} trials" in html_text  # the correlation sentence counts completed trials
    # the failed trial is excluded from the n of its critic (bilinear: 2 estimators × 10 seeds − 1)
    assert len(acc["bilinear"]) == 19


def test_report_is_self_contained(study):
    text = _report_text(study)
    assert not re.search(r"https?://", text, re.I)
    targets = re.findall(r"""(?:src|href)\s*=\s*["']([^"']*)""", text, re.I)
    assert targets and all(t.startswith(("data:image/png;base64,", "#")) for t in targets)  # nothing to fetch
    images = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)
    pngs = sorted(study["paths"]["figures"].glob("*.png"))
    assert len(images) == len(pngs) >= 5
    assert {base64.b64decode(b) for b in images} == {p.read_bytes() for p in pngs}
    assert "<style>" in text and "<link" not in text and "<script" not in text


def test_markdown_has_the_same_findings_and_relative_figure_links(study):
    md = study["paths"]["md"].read_text(encoding="utf-8")
    links = re.findall(r"\]\((figures/[^)]+)\)", md)
    assert links and all((study["paths"]["md"].parent / link).is_file() for link in links)
    pngs = {p.name for p in study["paths"]["figures"].glob("*.png")}
    assert {Path(x).name for x in links if x.endswith(".png")} == pngs
    assert "concat − bilinear = +" in md and "excludes 0" in md


def test_report_shows_study_metadata_and_tables(study):
    text = _report_text(study)
    for needle in ("fig3", "grid", "smoke", "seeds per configuration",
                   "Effects of each factor", "Pairwise differences", "ANOVA", "Environment",
                   "Hyperparameter importance"):
        assert needle in text
    # the environment row recorded by planted_study
    assert "<td class=\"t\">planted</td>" in text


# ---- figures -------------------------------------------------------------------------------------


def test_curves_one_band_per_configuration_at_mean_pm_sd(study):
    data = study["data"]
    fig = F.curves(data, "probe_accuracy")
    configs = sorted(data.trials["config_id"].unique())
    bands, lines = gid_artists(fig, "band:", "coll"), gid_artists(fig, "mean:", "line")
    assert len(bands) == len(lines) == len(configs) == 6
    assert len(fig.axes) == 2  # one panel per estimator

    # configuration 4 = concat · nce (critic-major grid order), recomputed from SQL with numpy
    by_step = defaultdict(list)
    for r in sql_rows(study["db"], "fig3"):
        if r["group"] == "4":
            by_step[r["step"]].append(r["probe_accuracy"])
    steps = sorted(by_step)
    mean = np.array([np.mean(by_step[s]) for s in steps])
    sd = np.array([np.std(by_step[s], ddof=1) for s in steps])
    (line,) = [x for x in lines if x.get_gid() == "mean:4"]
    (poly,) = [x for x in bands if x.get_gid() == "band:4"]
    assert line.get_label().startswith("concat · nce")
    np.testing.assert_allclose(line.get_xdata(), steps)
    np.testing.assert_allclose(line.get_ydata(), mean, rtol=1e-12)
    lo, hi = band_limits(poly, steps)
    np.testing.assert_allclose(lo, mean - sd, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(hi, mean + sd, rtol=1e-9, atol=1e-12)


def test_bound_curves_draw_log_k_only_where_nce_runs(study):
    fig = F.curves(study["data"], "bound_test")
    by_title = {ax.get_title(): ax for ax in fig.axes}
    dashed = lambda ax: [ln for ln in ax.lines if ln.get_linestyle() == "--"]  # noqa: E731
    (ceiling,) = dashed(by_title["nce"])
    np.testing.assert_allclose(ceiling.get_ydata(), math.log(64))  # K = the planted batch size
    assert ceiling.get_label() == "ceiling log K = 4.159 (K = 64)"
    assert dashed(by_title["nwj"]) == []
    assert all(ln.get_linestyle() != "--" for ax in F.curves(study["data"]).axes for ln in ax.lines)


def test_final_scatter_one_point_per_completed_trial(study):
    fig = F.final_scatter(study["data"], color_by="critic")
    pts = np.concatenate([c.get_offsets() for c in fig.axes[0].collections])
    finals = sql_finals(study["db"], "fig3")
    assert len(pts) == len(finals)
    want = sorted((r["bound_test"], r["probe_accuracy"]) for r in finals)
    np.testing.assert_allclose(sorted(map(tuple, pts)), want)
    assert sorted(t.get_text().split(" (")[0] for t in fig.axes[0].get_legend().get_texts()) == [
        "bilinear", "concat", "separable"]


def test_conditioning_none_without_log_cond_columns(study):
    data = study["data"]
    fig = F.conditioning(data)  # planted records carry log_cond_p50 only: the median lines
    assert fig is not None and len(gid_artists(fig, "mean:", "line")) == 6
    ev = data.evaluations.drop(columns=[c for c in data.evaluations.columns if c.startswith("log_cond_")])
    assert F.conditioning(dataclasses.replace(data, evaluations=ev)) is None


def test_conditioning_percentile_bands(study):
    data = study["data"]
    ev = data.evaluations.copy()
    base = ev["log_cond_p50"]
    for q, shift in (("p5", -2.0), ("p25", -1.0), ("p75", 1.0), ("p95", 2.0)):
        ev[f"log_cond_{q}"] = base + shift
    fig = F.conditioning(dataclasses.replace(data, evaluations=ev))
    assert len(gid_artists(fig, "band90:", "coll")) == len(gid_artists(fig, "band50:", "coll")) == 6
    (poly,) = gid_artists(fig, "band90:0", "coll")
    steps = sorted(ev["step"].unique())
    by_step = defaultdict(list)
    for r in sql_rows(study["db"], "fig3"):
        if r["group"] == "0":
            by_step[r["step"]].append(r["metrics"]["log_cond_p50"])
    lo, hi = band_limits(poly, steps)
    np.testing.assert_allclose(lo, [np.mean(by_step[s]) - 2 for s in steps])
    np.testing.assert_allclose(hi, [np.mean(by_step[s]) + 2 for s in steps])


def test_no_known_mi_and_not_adversarial(study):
    assert F.calibration_table(study["data"]) is None
    assert F.calibration(study["data"]) is None
    assert F.adversarial(study["data"]) is None


def test_calibration_table_matches_a_brute_force_loop(tmp_path):
    db = tmp_path / "calib.db"
    url = f"sqlite:///{db}"
    planted_study(url, "calib", critics=("separable", "concat"), estimators=("nce", "nwj"),
                  params={"data.name": ["gaussian"], "data.mi": [2.0, 4.0]}, seeds=4, corr="independent",
                  failed=["c0001-s0"])
    data = load(url, "calib")
    table = F.calibration_table(data)
    cells = defaultdict(list)
    for r in sql_finals(db, "calib"):
        cells[(r["config"]["estimator"]["name"], r["config"]["data"]["mi"])].append(r["bound_test"])
    assert len(table) == len(cells) == 4
    for (est, mi), values in cells.items():
        row = table[(table["estimator"] == est) & (table["true_mi"] == mi)].iloc[0]
        n = len(values)
        mean = sum(values) / n
        bias = mean - mi
        variance = sum((v - mean) ** 2 for v in values) / n
        mse = sum((v - mi) ** 2 for v in values) / n
        assert row["n"] == n
        assert row["bias"] == pytest.approx(bias, rel=1e-12)
        assert row["variance"] == pytest.approx(variance, rel=1e-12)
        assert row["mse"] == pytest.approx(mse, rel=1e-12)
    assert sum(len(v) for v in cells.values()) == 4 * 2 * 2 * 2 - 1  # the failed trial is not counted

    fig = F.calibration(data)
    assert fig is not None
    diagonal = [ln for ln in fig.axes[0].lines if ln.get_label().startswith("y = x")]
    (d,) = diagonal
    np.testing.assert_allclose(d.get_xdata(), d.get_ydata())
    report = write_report(data, analyze(data, url, n_boot=100, with_importance=False), tmp_path / "out")
    text = report["html"].read_text()
    assert "Calibration table" in text and (report["figures"] / "calibration.png").is_file()


def _adversarial_study(url: str, name: str, seeds: int = 3) -> dict[int, list[tuple[float, float]]]:
    """A Fig. 1c-shaped study written through Store: no critic, no estimator, bounds null."""
    from mimax.storage.store import Store

    rng = np.random.default_rng(1)
    truth = defaultdict(list)
    cfg = {"data": {"name": "mnist"}, "encoder": {"name": "realnvp"}, "critic": None, "estimator": None,
           "train": {"steps": 10, "batch_size": 128, "mode": "adversarial"}, "eval": {"every": 5}}
    with Store(url) as store:
        store.create_study(name, space_source="fig1c-adversarial", space_json={"name": name, "params": {}},
                           space_fingerprint="x", budget="smoke", sampler="grid", directions=["maximize"],
                           metrics=["probe_accuracy"], seeds=seeds, n_configs_requested=1,
                           optuna_study_name=f"mimax:{name}", results_dir="/tmp/x")
        store.add_trials(name, [{"trial_key": f"c0000-s{s}", "config": dict(cfg, seed=s), "replicate_group": "0",
                                 "replicate_index": s, "optuna_trial_number": 0} for s in range(seeds)])
        rows = []
        for s in range(seeds):
            for step in (0, 5, 10):
                probe, clf = 0.85 - 0.04 * step + 0.01 * rng.standard_normal(), 0.9 - 0.07 * step
                truth[step].append((probe, clf))
                rows.append({"trial_key": f"c0000-s{s}", "step": step,
                             "record": {"event": "eval", "step": step, "bound_train": None, "bound_test": None,
                                        "probe_accuracy": probe, "classifier_accuracy": clf, "loss": 0.1},
                             "trial": {"state": "completed"} if step == 10 else None})
        store.write_evaluations(name, rows)
    return truth


def test_adversarial_figure_and_report(tmp_path):
    url = f"sqlite:///{tmp_path / 'adv.db'}"
    truth = _adversarial_study(url, "adv")
    data = load(url, "adv")
    fig = F.adversarial(data)
    lines = {ln.get_gid(): ln for ln in gid_artists(fig, "mean:", "line")}
    assert set(lines) == {"mean:probe_accuracy:0", "mean:classifier_accuracy:0"}
    steps = sorted(truth)
    np.testing.assert_allclose(lines["mean:probe_accuracy:0"].get_ydata(),
                               [np.mean([p for p, _ in truth[s]]) for s in steps])
    np.testing.assert_allclose(lines["mean:classifier_accuracy:0"].get_ydata(),
                               [np.mean([c for _, c in truth[s]]) for s in steps])
    assert F.curves(data, "bound_test") is None and F.final_scatter(data) is None
    # a study without bounds, factors or an Optuna study still gets a report
    report = write_report(data, analyze(data, url, n_boot=50, with_importance=False), tmp_path / "out")
    text = report["html"].read_text()
    assert "Probe accuracy goes from" in text and (report["figures"] / "adversarial.png").is_file()


def test_user_text_from_the_database_is_escaped(tmp_path):
    url = f"sqlite:///{tmp_path / 'evil.db'}"
    name = "<script>alert('study')</script>"
    evil = '<img src=x onerror="alert(1)">'
    planted_study(url, name, critics=("bilinear", evil), estimators=("nce",), seeds=3)
    data = load(url, name)
    report = write_report(data, analyze(data, url, n_boot=50, with_importance=False), tmp_path / "out")
    for path in (report["html"], report["md"]):
        text = path.read_text()
        if path.suffix == ".md":  # a fenced code block shows its text literally: raw there is safe
            fenced = re.findall(r"^```json\n(.*?)^```$", text, re.S | re.M)
            assert len(fenced) == 1 and name in fenced[0]
            text = re.sub(r"^```json\n.*?^```$", "", text, flags=re.S | re.M)
        assert "<script" not in text and "<img src=x" not in text
        if path.suffix == ".html":
            assert "&lt;script&gt;alert(&#x27;study&#x27;)&lt;/script&gt;" in text
            assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in text
        else:  # quotes are harmless in Markdown text
            assert "&lt;script&gt;alert('study')&lt;/script&gt;" in text
            assert '&lt;img src=x onerror="alert(1)"&gt;' in text


def test_importing_the_report_uses_no_pyplot_ray_or_trainables():
    code = ("import sys, mimax.analysis.report, mimax.analysis.figures; "
            "bad = [m for m in sys.modules if m == 'matplotlib.pyplot' or m == 'ray' or m.startswith('ray.') "
            "or m.startswith('mimax.trainables')]; print(bad); sys.exit(1 if bad else 0)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.mark.slow
def test_report_renders_in_a_headless_browser(study, tmp_path):
    from matplotlib.image import imread

    require(CHROMIUM.exists(), f"Debian's chromium at {CHROMIUM} (apt-get install chromium)")

    shot = tmp_path / "report.png"
    cmd = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,2400", f"--screenshot={shot}",
           study["paths"]["html"].resolve().as_uri()]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env={**os.environ, "HOME": str(tmp_path)})
    assert shot.is_file(), res.stderr[-2000:]
    assert shot.stat().st_size > 20_000
    img = imread(shot)
    assert img.shape[:2] == (2400, 1280)
    flat = img.reshape(-1, img.shape[-1])
    assert len(np.unique(flat[::97], axis=0)) > 50  # text, tables and plots, not a blank page
    assert (flat[:, :3].mean(axis=1) < 0.5).mean() > 0.005  # some dark pixels: text was drawn


def test_curves_keep_the_best_configurations_when_there_are_too_many(tmp_path):
    db = tmp_path / "many.db"
    url = f"sqlite:///{db}"
    planted_study(url, "many", params={"train.lr": [1e-4, 3e-4, 1e-3]}, seeds=2, optuna_study=False,
                  effect={"train.lr": {1e-3: 0.03, 3e-4: 0.01}})
    data = load(url, "many")
    final_by_config = defaultdict(list)
    for r in sql_finals(db, "many"):
        final_by_config[r["group"]].append(r["probe_accuracy"])
    assert len(final_by_config) == 18 > F.MAX_CONFIGS
    ranked = sorted(final_by_config, key=lambda c: -np.mean(final_by_config[c]))
    fig = F.curves(data)
    shown = {ln.get_gid().split(":", 1)[1] for ln in gid_artists(fig, "mean:", "line")}
    assert shown == set(ranked[:F.MAX_CONFIGS])
    assert "best 12 of 18" in fig.get_suptitle()
    labels = F.config_labels(data)
    assert sorted(labels.values())[0].endswith("lr=0.0001") and len(set(labels.values())) == 18


def test_a_plugin_estimators_ceiling_is_labelled_as_a_ceiling_and_k_is_the_batch_size(tmp_path):
    """A plugin estimator's ceiling log(K / α) = 6.537 at K = 128 was written "log 690 = 6.537" in the
    report and "log K = 6.537 (K=690)" in the figure: K worked backwards from the ceiling."""
    from mimax.storage.store import Store

    url = f"sqlite:///{tmp_path / 'plugin.db'}"
    planted_study(url, "alpha", seeds=2, batch_size=128)
    alpha = math.log(128 / 0.1855)  # 6.537, as Poole's interpolated bound's log(K / α) gives it
    with Store(url) as store:  # the nwj trials stand for the plugin: their trials recorded its ceiling
        for t in store.trials("alpha"):
            if t["config"]["estimator"]["name"] == "nwj":
                store.update_trial("alpha", t["trial_key"], ceiling=alpha)
    data = load(url, "alpha")
    md = write_report(data, analyze(data, url, n_boot=0, with_importance=False), tmp_path / "out")["md"].read_text()
    assert re.search(r"nwj ends .* nats below its ceiling 6\.537 on average", md), md
    assert re.search(r"NCE ends .* nats below its ceiling log K = 4\.852 \(K = 128\) on average", md), md
    assert "log 690" not in md and "K=690" not in md and "K = 690" not in md
    fig = F.curves(data, "bound_test")
    labels = {ax.get_title(): [ln.get_label() for ln in ax.lines if ln.get_linestyle() == "--"] for ax in fig.axes}
    assert labels == {"nce": ["ceiling log K = 4.852 (K = 128)"], "nwj": ["ceiling 6.537"]}
