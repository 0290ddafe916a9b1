"""docs/reproduction/generate.py on the planted database shaped like `make reproduce`'s (tests/analysis/
planted_paper.py): every placeholder kind renders what an independent oracle reads from the database (plain
SQL and Python's statistics module, `mimax verify paper --json` for the verdicts); the shipped template
renders; a changed number makes --check fail with a diff naming the line; bad placeholders are one line
and exit 2; --partial marks missing studies pending."""

from __future__ import annotations

import contextlib
import io
import json
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
from pathlib import Path

import generate
import placeholders
import pytest
from planted_paper import EXPECTED, write_paper_studies

from mimax.analysis.claims import load_claims
from mimax.cli import main as mimax_main
from mimax.errors import ConfigError
from mimax.storage.store import Store

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "docs" / "reproduction" / "generate.py"
COMMIT = "0123456789abcdef0123456789abcdef01234567+dirty"
FLOATS = ("bound_test", "bound_train", "probe_accuracy")  # columns of mimax_evaluations; others are in its JSON


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """The planted database, with a resumed session (a git commit) for fig3-critics-paper-steps."""
    path = tmp_path_factory.mktemp("reprodoc") / "reproduce-cpu.db"
    url = f"sqlite:///{path}"
    write_paper_studies(url)
    store = Store(url)
    try:
        store.record_environment("fig3-critics-paper-steps", {"git_commit": COMMIT, "device": "cuda", "cpu": "AMD EPYC",
                                                      "cpu_count": 16, "gpu": "NVIDIA H200"}, 1)
    finally:
        store.close()
    return path, url


@pytest.fixture(scope="module")
def source(planted):
    return generate.Source(planted[1])  # mimax verify paper with its defaults: 10,000 resamples, seed 0


@pytest.fixture(scope="module")
def verified(planted):
    """What `mimax verify paper --json` prints, read through the command line."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        mimax_main(["verify", "paper", "--db", planted[1], "--json"])
    return json.loads(out.getvalue())


def rendered(source, text: str) -> str:
    return placeholders.render(text, source, "t.md.in")


# ---- an oracle: plain SQL over the database ------------------------------------------------------------------


@contextlib.contextmanager
def closing_sql(path):
    """A connection that commits and closes: the last one closed folds SQLite's WAL back into the file."""
    con = sqlite3.connect(path)
    try:
        with con:
            yield con
    finally:
        con.close()


def rows(path, study: str, metric: str) -> list[dict]:
    """Every evaluation of ``study`` that records ``metric``: trial key, state, config, step, value."""
    col = f"e.{metric}" if metric in FLOATS else f"json_extract(e.metrics, '$.\"{metric}\"')"
    with closing_sql(path) as con:
        got = con.execute(
            f"SELECT t.trial_key, t.state, t.config_json, e.step, {col} FROM mimax_evaluations e "
            "JOIN mimax_trials t ON t.id = e.trial_id JOIN mimax_studies s ON s.id = t.study_id "
            f"WHERE s.name = ? AND {col} IS NOT NULL ORDER BY t.id, e.step", (study,)).fetchall()
    return [{"trial": k, "state": st, "config": json.loads(c), "step": step, "value": v} for k, st, c, step, v in got]


def final_values(path, study: str, metric: str, **where) -> list[float]:
    """Each completed trial's last value of ``metric``, among the trials whose config matches ``where``
    (keys as section__leaf)."""
    last = {}
    for r in rows(path, study, metric):
        if r["state"] == "completed" and all(r["config"][k.split("__")[0]][k.split("__")[1]] == v for k, v in where.items()):
            last[r["trial"]] = r["value"]
    return list(last.values())


def fmt(x: float, spec: str = ".3f") -> str:
    return format(x, spec).replace("-", "−")


# ---- each kind ------------------------------------------------------------------------------------------------


def test_summary_shows_the_verdicts_of_mimax_verify_paper(source, verified):
    out = rendered(source, "{{summary}}").splitlines()
    assert out[0] == ("| finding | sklearn (the paper's probe) | torch (the converged probe) | overall | "
                      "claims: hold / fail / inconclusive / untestable | holds under one probe only |")
    body = {line.split(" | ")[0].lstrip("| "): [c.strip() for c in line.strip("|").split(" | ")] for line in out[2:]}
    assert list(body) == [f["finding"] for f in verified["findings"]]
    for f in verified["findings"]:
        row = body[f["finding"]]
        probes = [f["probes"].get(p, "– (no probe)") for p in ("sklearn", "torch")]
        only = [p for p, v in f["probes"].items() if v == "holds"]
        counts = f"{f['holds']} / {f['fails']} / {f['inconclusive']} / {f['untestable']}"
        assert row[1:] == [*probes, f["verdict"], counts,
                           f"yes: {only[0]} only" if len(f["probes"]) == 2 and len(only) == 1 else ""]
    # The planted truth: fig3 holds under the converged probe only; calibration's planted study stops before
    # its claims' endpoint (untestable, never fails); fig4c is undecided.
    assert body["fig3 critics"][1:4] == ["fails", "holds", "fails"] and body["fig3 critics"][5] == "yes: torch only"
    assert body["calibration"][1:4] == ["– (no probe)", "– (no probe)", "untestable"]
    assert body["fig4c non-i.i.d."][3] == "inconclusive" and body["pixel baseline"][1:4] == ["holds"] * 3


def test_claims_and_claim_fields_show_each_claims_numbers(source, verified):
    claims = {c["id"]: c for c in verified["claims"]}
    out = rendered(source, '{{claims "fig4c non-i.i.d."}}').splitlines()
    assert out[0] == "| claim | test | estimate | 95% CI | n | verdict | p-values | the paper |"
    ids = [c["id"] for c in verified["claims"] if c["finding"] == "fig4c non-i.i.d."]
    assert [line.split(" | ")[0] for line in out[2:]] == [f"| `{cid}`" for cid in ids]
    for line, cid in zip(out[2:], ids):
        c = claims[cid]
        cells = [x.strip() for x in line.strip("|").split(" | ")]
        assert cells[1] == f"{c['study']}: {c['test']}" and cells[4] == str(c["n"]) and cells[7] == c["paper"]
        ph, pf = c["p_holds_holm"], c["p_fails_holm"]
        assert cells[6] == f"p_holds {ph:.2g}, p_fails {pf:.2g} (Holm)".replace("-", "−")
        assert cells[5] == EXPECTED.get(cid, "holds")
        lo, hi = (float(x.replace("−", "-")) for x in cells[3].strip("[]").split(", "))
        assert float(cells[2].replace("−", "-")) == pytest.approx(c["estimate"], abs=1e-3)
        assert (lo, hi) == (pytest.approx(c["ci"][0], abs=1e-3), pytest.approx(c["ci"][1], abs=1e-3))
    # A check is not a finding's claim: it is in no finding's table.
    assert "calibration-nce-below-ceiling" not in rendered(source, '{{claims "calibration"}}')
    c = claims["fig3-bilinear-above-separable.sklearn"]
    line = rendered(source, " ".join(f"{{{{claim fig3-bilinear-above-separable.sklearn {f}}}}}"
                                     for f in ("verdict", "n", "estimate", "ci")))
    assert line.split(" ", 2)[:2] == [EXPECTED["fig3-bilinear-above-separable.sklearn"], str(c["n"])] == \
        [c["verdict"], str(c["n"])]
    assert rendered(source, "{{claim fig3-separable-above-concat.torch estimate fmt=+.5f}}") == \
        fmt(claims["fig3-separable-above-concat.torch"]["estimate"], "+.5f")
    assert rendered(source, "{{claim pixel-clean.torch paper}}") == claims["pixel-clean.torch"]["paper"]


def test_family_and_count_fields(source, verified):
    fams = {}
    for c in verified["claims"]:  # Holm's families as the JSON's p-values show them: the claims adjusted
        if c["p_holds_holm"] is not None:
            fams[c["family"]] = fams.get(c["family"], 0) + 1
    assert rendered(source, "{{family count}}") == str(len(fams))
    for name, size in fams.items():
        assert rendered(source, f'{{{{family size "{name}"}}}}') == str(size)
    assert rendered(source, "{{family text}}").startswith(
        f"alpha {verified['alpha']:g}: Holm within each of {len(fams)} ")
    for bad in ("{{family t 3}}", "{{family m}}", "{{family count 3}}", "{{family size}}"):
        with pytest.raises(ConfigError, match="family takes text, count, or size FAMILY"):
            rendered(source, bad)
    with pytest.raises(ConfigError, match="unknown family 'nosuch'"):
        rendered(source, "{{family size nosuch}}")
    findings = [c for c in verified["claims"] if c["kind"] == "finding"]
    checks = [c for c in verified["claims"] if c["kind"] == "check"]
    for verdict in ("holds", "fails", "inconclusive", "untestable"):
        assert rendered(source, f"{{{{count {verdict}}}}}") == str(sum(c["verdict"] == verdict for c in findings))
    assert rendered(source, "{{count claims}} {{count checks}} {{count passed}} {{count pending}}") == \
        f"{len(findings)} {len(checks)} {sum(c['verdict'] == 'passed' for c in checks)} 0"
    with pytest.raises(ConfigError, match="count: expected one of holds, fails"):
        rendered(source, "{{count hold}}")


def test_spent_gives_each_findings_seeds_machine_time_and_verdict_at_the_first_look(planted, source, verified,
                                                                                     tmp_path):
    out = rendered(source, "{{spent 3}}").splitlines()
    assert out[0] == ("| finding | studies read | seeds per configuration | machine time (h) | verdict at 3 seeds "
                      "(claims: hold / fail / inconclusive / untestable) | verdict now |")
    body = {line.split(" | ")[0].lstrip("| "): [c.strip() for c in line.strip("|").split(" | ")] for line in out[2:]}
    assert list(body) == [f["finding"] for f in verified["findings"]]
    # the oracle for the first look: the same database with every trial of seed 3 and above deleted, verified
    cut = tmp_path / "cut.db"
    shutil.copy(planted[0], cut)
    with closing_sql(cut) as con:
        con.execute("DELETE FROM mimax_evaluations WHERE trial_id IN (SELECT id FROM mimax_trials WHERE seed >= 3)")
        con.execute("DELETE FROM mimax_trials WHERE seed >= 3")
    out3 = io.StringIO()
    with contextlib.redirect_stdout(out3):
        mimax_main(["verify", "paper", "--db", f"sqlite:///{cut}", "--json"])
    def said(f):
        return f"{f['verdict']} ({f['holds']} / {f['fails']} / {f['inconclusive']} / {f['untestable']})"

    at3 = {f["finding"]: said(f) for f in json.loads(out3.getvalue())["findings"]}
    for f in verified["findings"]:
        row = body[f["finding"]]
        studies = sorted({c["study"] for c in verified["claims"] if c["finding"] == f["finding"] and c["kind"] == "finding"})
        assert row[1] == ", ".join(studies) and row[4] == at3[f["finding"]] and row[5] == said(f)
        seconds = 0.0  # each trial's last evaluation's clock over its pack size, in SQL
        with closing_sql(planted[0]) as con:
            for study in studies:
                seconds += con.execute(
                    "SELECT COALESCE(SUM(e.wall_s / COALESCE(json_extract(e.metrics, '$.pack_size'), 1)), 0) "
                    "FROM mimax_evaluations e JOIN mimax_trials t ON t.id = e.trial_id "
                    "JOIN mimax_studies s ON s.id = t.study_id WHERE s.name = ? AND e.wall_s > 0 AND e.step = "
                    "(SELECT MAX(step) FROM mimax_evaluations WHERE trial_id = e.trial_id)", (study,)).fetchone()[0]
        assert float(row[3]) == pytest.approx(seconds / 3600, abs=0.006)
    # planted with 5 seeds: the first look reads 3 of them, and fig3 holds under one probe only at both
    assert body["fig3 critics"][2] == "5" and seconds >= 0
    with pytest.raises(ConfigError, match="spent takes SEEDS, a whole number ≥ 2, not '1'"):
        rendered(source, "{{spent 1}}")


def test_checks_are_a_table_apart_with_the_census_of_each(planted, source, verified):
    out = rendered(source, "{{checks}}").splitlines()
    assert out[0] == "| check | what it checks | evaluations | largest excess over the limit | result |"
    checks = [c for c in verified["claims"] if c["kind"] == "check"]
    assert [line.split(" | ")[0] for line in out[2:]] == [f"| `{c['id']}`" for c in checks] and checks
    for line, c in zip(out[2:], checks):
        cells = [x.strip() for x in line.strip("|").split(" | ")]
        assert cells[1] == f"{c['study']}: {c['test']}".replace("|", "\\|") and cells[2] == str(c["n"])
        assert cells[4] == c["verdict"]
        assert float(cells[3].replace("−", "-")) == pytest.approx(c["estimate"], rel=1e-3)
    # an oracle for one census: calibration's NCE evaluations, counted in SQL
    nce = [r for r in rows(planted[0], "calibration-cpu", "bound_test") if r["config"]["estimator"]["name"] == "nce"]
    line, = [x for x in out if x.startswith("| `calibration-nce-below-ceiling` |")]
    assert f" | {len(nce)} | " in line


def test_waiting_names_each_preferred_study_not_completed_and_its_claims(planted, source):
    with closing_sql(planted[0]) as con:
        status = dict(con.execute("SELECT name, status FROM mimax_studies"))
    claims, _ = load_claims("paper")
    out = rendered(source, "{{waiting}}")
    for study in {f"{c.preset}-paper-steps" for c in claims.claims if c.preset}:
        from mimax.search_spaces.spec import load_spec

        if "paper-steps" not in load_spec(study.removesuffix("-paper-steps")).budgets:
            continue
        shown = f"| {study} | " in out
        assert shown == (status.get(study) != "completed"), study
        if shown:
            line, = [x for x in out.splitlines() if x.startswith(f"| {study} | ")]
            assert line.split(" | ")[1] == status.get(study, "absent")


def test_finding_fields(source, verified):
    f = {x["finding"]: x for x in verified["findings"]}["fig3 critics"]
    text = '{{finding "fig3 critics" verdict}}/{{finding "fig3 critics" sklearn}}/{{finding "fig3 critics" torch}}/' \
           '{{finding "fig3 critics" note}}'
    assert rendered(source, text) == f"{f['verdict']}/{f['probes']['sklearn']}/{f['probes']['torch']}/{f['note']}"
    assert rendered(source, '{{finding "fig4c non-i.i.d." verdict}}') == "inconclusive"


def test_configs_is_the_mean_and_sd_over_seeds_of_each_final_value(planted, source):
    out = rendered(source, "{{configs fig3-critics-paper-steps probe_accuracy.torch bound_test}}").splitlines()
    assert out[0] == "| critic | estimator | probe_accuracy.torch | bound_test | n |"
    assert len(out) == 2 + 6
    for line in out[2:]:
        critic, estimator, acc, bound, n = (x.strip() for x in line.strip("|").split(" | "))
        where = {"critic__name": critic, "estimator__name": estimator}
        for cell, metric in ((acc, "probe_accuracy.torch"), (bound, "bound_test")):
            x = final_values(planted[0], "fig3-critics-paper-steps", metric, **where)
            assert cell == f"{fmt(statistics.mean(x))} ± {fmt(statistics.stdev(x))}"
        assert n == str(len(final_values(planted[0], "fig3-critics-paper-steps", "bound_test", **where)))
    # where= keeps the rows it selects; fmt= sets the decimals.
    out = rendered(source, "{{configs fig4c-noniid-paper-steps bound_test where=data.iid=false fmt=.5f}}").splitlines()
    assert [line.split(" | ")[:2] for line in out[2:]] == [["| nce", "false"], ["| nwj", "false"]]
    x = final_values(planted[0], "fig4c-noniid-paper-steps", "bound_test", estimator__name="nwj", data__iid=False)
    assert out[3].split(" | ")[2] == f"{fmt(statistics.mean(x), '.5f')} ± {fmt(statistics.stdev(x), '.5f')}"


def test_value_reads_final_or_a_step_and_gives_each_statistic(planted, source):
    study = "fig3-critics-paper-steps"
    x = final_values(planted[0], study, "probe_accuracy.torch", critic__name="concat")
    text = " ".join(f"{{{{value {study} probe_accuracy.torch where=critic=concat stat={s} fmt=.6f}}}}"
                    for s in ("mean", "sd", "min", "max"))
    assert rendered(source, text) == " ".join(fmt(v, ".6f") for v in (statistics.mean(x), statistics.stdev(x),
                                                                      min(x), max(x)))
    at = [r["value"] for r in rows(planted[0], study, "bound_test")
          if r["step"] == 10000 and r["config"]["critic"]["name"] in ("bilinear", "separable")]
    assert rendered(source, f"{{{{value {study} bound_test where=critic=bilinear|separable at=10000 stat=mean_sd}}}}") \
        == f"{fmt(statistics.mean(at))} ± {fmt(statistics.stdev(at))}"
    assert rendered(source, f"{{{{value {study} bound_test at=0 stat=n}}}}") == str(len(
        [r for r in rows(planted[0], study, "bound_test") if r["step"] == 0]))
    # true and 0.05 are read as YAML: a boolean and a number.
    iid = final_values(planted[0], "fig4c-noniid-paper-steps", "bound_test", data__iid=True)
    assert rendered(source, "{{value fig4c-noniid-paper-steps bound_test where=data.iid=true fmt=.5f}}") == \
        fmt(statistics.mean(iid), ".5f")
    # minus= is the difference of two selections' means
    sep = final_values(planted[0], study, "probe_accuracy.torch", critic__name="separable")
    contrast = f"{{{{value {study} probe_accuracy.torch where=critic=separable minus=critic=concat fmt=+.6f}}}}"
    assert rendered(source, contrast) \
        == fmt(statistics.mean(sep) - statistics.mean(x), "+.6f")
    with pytest.raises(ConfigError, match="minus= gives a difference of means"):
        rendered(source, f"{{{{value {study} bound_test minus=critic=concat stat=sd}}}}")
    noisy = final_values(planted[0], "pixel-baseline-cpu", "probe_accuracy.sklearn", data__noise=0.05)
    assert rendered(source, "{{value pixel-baseline-cpu probe_accuracy.sklearn where=data.noise=0.05}}") == \
        fmt(statistics.mean(noisy))


def test_study_keys(planted, source):
    with closing_sql(planted[0]) as con:
        seeds, = con.execute("SELECT seeds FROM mimax_studies WHERE name = 'fig1c-adversarial-cpu'").fetchone()
        configs = [json.loads(c) for c, in con.execute(
            "SELECT config_json FROM mimax_trials t JOIN mimax_studies s ON s.id = t.study_id "
            "WHERE s.name = 'fig1c-adversarial-cpu'")]
    text = " ".join(f"{{{{study fig1c-adversarial-cpu {k}}}}}" for k in
                    ("seeds", "trials", "completed", "configurations", "adversarial.warmup", "train.steps"))
    assert rendered(source, text) == " ".join(f"{x:,}" for x in (seeds, len(configs), len(configs), 1,
                                                                 configs[0]["adversarial"]["warmup"],
                                                                 configs[0]["train"]["steps"]))
    assert rendered(source, "{{study fig3-critics-paper-steps train.steps}}") == "21,000"


def test_a_study_key_no_trial_sets_shows_its_none_text():
    import pandas as pd

    class Data:
        name, study = "s", {"seeds": 2}
        trials = pd.DataFrame({"state": ["completed"] * 2, "config_id": [0, 0],
                               "eval.probe_train_size": [None, None], "train.steps": [400, 400]})

    class Source:
        def data(self, name):
            return Data()

    assert placeholders.render('{{study s eval.probe_train_size none="all 60,000"}}', Source(), "t") == "all 60,000"
    assert placeholders.render("{{study s eval.probe_train_size}}", Source(), "t") == "–"
    assert placeholders.render("{{study s train.steps none=x}}", Source(), "t") == "400"


def test_calibration_table_is_bias_variance_and_mse_per_estimator_and_true_mi(planted, source):
    out = rendered(source, "{{calibration calibration-cpu}}").splitlines()
    assert out[0] == "| estimator | 2 nats | 4 nats | 6 nats | 8 nats | 10 nats |"
    nce = next(line for line in out if line.startswith("| nce |")).strip("|").split(" | ")[1:]
    for cell, mi in zip(nce, (2.0, 4.0, 6.0, 8.0, 10.0)):
        x = final_values(planted[0], "calibration-cpu", "bound_test", estimator__name="nce", data__mi=mi)
        bias, var = statistics.mean(x) - mi, statistics.pvariance(x)
        mse = statistics.mean([(v - mi) ** 2 for v in x])
        assert cell.strip() == f"{fmt(bias, '#.3g')} / {fmt(var, '#.2g')} / {fmt(mse, '#.3g')}"


def test_provenance_names_the_file_its_size_each_study_and_its_sessions(planted, source):
    out = rendered(source, "{{provenance}}")
    size = planted[0].stat().st_size
    assert out.splitlines()[0] == f"The database: `{planted[0]}`, SQLite, {size / 1e6:.1f} MB ({size:,} bytes), 9 studies."
    with closing_sql(planted[0]) as con:
        names = [n for n, in con.execute("SELECT name FROM mimax_studies ORDER BY name")]
        recorded = con.execute("SELECT recorded_at FROM mimax_environment e JOIN mimax_studies s ON s.id = e.study_id "
                               "WHERE s.name = 'fig3-critics-paper-steps' AND e.session = 1").fetchone()[0]
    table = out.splitlines()[2:]
    assert [line.split(" | ")[0].lstrip("| ") for line in table[2:]] == names
    fig3 = next(line for line in table if line.startswith("| fig3-critics-paper-steps |"))
    assert " | 30 / 30 | 0: commit unknown, " in fig3
    assert f"; 1: `0123456789ab+dirty`, {recorded[:16].replace('T', ' ')} | CPU unknown; AMD EPYC, 16 cores, " \
        "NVIDIA H200 |" in fig3


def test_comments_are_dropped_and_text_is_kept(source):
    text = "a {# gone {{value nosuch x}}\nstill gone #}b\n{# whole line #}\nc {{study pixel-baseline-cpu seeds}} d\n"
    assert rendered(source, text) == "a b\nc 5 d\n"


# ---- the shipped template --------------------------------------------------------------------------------------


def test_the_shipped_template_renders_on_the_planted_database_and_states_both_probes(planted):
    # The planted database holds the MLP presets at paper-steps, the template reads their cpu studies:
    # rendered as `make reproduce` renders a database still being built (--partial), those are pending.
    source = generate.Source(planted[1], partial=True)
    template = generate.TEMPLATE.read_text()
    out = placeholders.render(template, source, "REPRODUCTION.md.in")
    assert "{{" not in out and "{#" not in out
    assert "fig3-critics-cpu" in source.awaited and "calibration-cpu" not in source.awaited
    assert placeholders.PENDING in out.split("## Fig. 3")[1]
    assert placeholders.PENDING not in out.split("## Estimator calibration")[1]
    assert out.startswith("<!-- Generated by docs/reproduction/generate.py")
    claims, _ = load_claims("paper")
    for finding in dict.fromkeys(c.finding for c in claims.claims):
        assert f'{{{{claims "{finding}"}}}}' in template, finding
        reads = {c.metric.rsplit(".", 1)[1] for c in claims.claims if c.finding == finding
                 and c.metric.startswith("probe_accuracy.")}
        if reads:  # each finding says under which probe it holds
            assert reads == {"sklearn", "torch"}
            for probe in ("sklearn", "torch"):
                assert f'{{{{finding "{finding}" {probe}}}}}' in template, (finding, probe)
        else:
            section = template.split(f'{{{{claims "{finding}"}}}}')[1].split("\n## ")[0]
            assert "No claim of this finding reads a probe" in section, finding


def test_the_shipped_templates_studies_and_steps_are_those_make_reproduce_runs_at_budget_cpu():
    """Every study the template names is a preset's at budget cpu, and every step it reads is one that
    budget evaluates: a preset's budget changed elsewhere shows up here, not hours into make reproduce."""
    from mimax.search_spaces import load_space, preset_names

    template = re.sub(r"\{#.*?#\}", "", generate.TEMPLATE.read_text(), flags=re.S)  # not the doc comment
    used = re.findall(r"\{\{(?:value|configs|study|calibration) ([^\s}]+)([^}]*)\}\}", template)
    assert len(used) > 100
    for study, rest in used:
        preset = study.removesuffix("-cpu")
        assert study.endswith("-cpu") and preset in preset_names(), study
        space = load_space(preset, "cpu")
        steps, every = space.base["train"]["steps"], space.base["eval"]["every"]
        for at in re.findall(r"\bat=(\d+)", rest):
            assert int(at) <= steps and (int(at) % every == 0 or int(at) == steps), (study, at, every, steps)


# ---- the command --------------------------------------------------------------------------------------------


@pytest.fixture
def quick(monkeypatch):
    """generate.main in-process with 200 resamples (the verdicts are not the subject here)."""
    monkeypatch.setattr(generate, "N_BOOT", 200)
    return generate.main


def test_check_passes_then_fails_with_a_diff_naming_the_line_after_one_number_changes(planted, tmp_path, quick,
                                                                                        capsys):
    db = tmp_path / "copy.db"
    shutil.copy(planted[0], db)
    template = tmp_path / "t.md.in"
    template.write_text("# t\n\nline three\n\nfig4c: {{value fig4c-noniid-paper-steps bound_test where=data.iid=false,"
                        "estimator=nce fmt=.4f}} nats\n\nlast line\n")
    readme = tmp_path / "README.md"
    readme.write_text("x\nThe database: <!-- reference-db-size -->?<!-- /reference-db-size -->.\n")
    args = ["--db", f"sqlite:///{db}", "--template", str(template), "--out", str(tmp_path / "out.md"),
            "--readme", str(readme)]
    assert quick(args) == 0
    size = db.stat().st_size
    assert readme.read_text() == (f"x\nThe database: <!-- reference-db-size -->{size / 1e6:.1f} MB ({size:,} bytes)"
                                  f"<!-- /reference-db-size -->.\n")
    before = (tmp_path / "out.md").read_text()
    assert quick([*args, "--check"]) == 0
    capsys.readouterr()

    with closing_sql(db) as con:  # one trial's final test bound, 0.03 nats higher
        con.execute("UPDATE mimax_evaluations SET bound_test = bound_test + 0.03 WHERE id = (SELECT e.id FROM "
                    "mimax_evaluations e JOIN mimax_trials t ON t.id = e.trial_id JOIN mimax_studies s ON "
                    "s.id = t.study_id WHERE s.name = 'fig4c-noniid-paper-steps' AND t.trial_key = 'c0000-s0' "
                    "ORDER BY e.step DESC LIMIT 1)")
    assert quick([*args, "--check"]) == 1
    printed = capsys.readouterr()
    assert (tmp_path / "out.md").read_text() == before  # --check writes nothing
    old = before.splitlines()[4]
    new = next(line for line in printed.out.splitlines() if line.startswith("+fig4c"))[1:]
    assert f"\n-{old}\n+{new}\n" in printed.out and old != new
    hunk = re.search(r"^@@ -(\d+),(\d+) \+\d+,\d+ @@$", printed.out, re.M)
    assert int(hunk.group(1)) <= 5 < int(hunk.group(1)) + int(hunk.group(2))  # the hunk covers line 5
    assert "out.md (on disk)" in printed.out and "out.md differs from what the database renders" in printed.err
    assert abs(float(new.split()[1].replace("−", "-")) - float(old.split()[1].replace("−", "-")) - 0.01) < 1e-4


BAD = [
    ("{{valu x}}", "unknown placeholder kind 'valu' (kinds: summary,"),
    ("{{value fig3-critics-paper-steps}}", "expected 2 arguments, got 1 (usage: {{value STUDY METRIC"),
    ("{{summary extra}}", "expected 0 arguments, got 1"),
    ("{{claims}}", "expected 1 argument, got 0"),
    ("{{value a b foo=1}}", "unknown option 'foo'"),
    ("{{value a b at=1 at=2}}", "option 'at' given twice"),
    ("{{claims \"fig3 critics}}", "malformed: no closing quotation"),
    ("{{}}", "empty placeholder"),
    ("{{value a b fmt=q}}", "fmt: 'q' is not a number format"),
    ("text {{summary", "malformed placeholder: '{{' without '}}' on its line"),
    ("text }} more", "malformed placeholder: '}}' without '{{'"),
    ("{# never closed", "malformed placeholder: '{#' without '#}'"),
    ("closed #} never opened", "malformed placeholder: '#}' without '{#'"),
]


@pytest.mark.parametrize("body,message", BAD, ids=[b for b, _ in BAD])
def test_a_malformed_placeholder_is_one_line_and_exit_2_before_the_database_is_read(tmp_path, capsys, body, message):
    template = tmp_path / "bad.md.in"
    template.write_text(f"line one\n{body}\n")
    out = tmp_path / "out.md"
    code = generate.main(["--db", f"sqlite:///{tmp_path / 'none.db'}", "--template", str(template), "--out", str(out),
                          "--no-readme"])
    printed = capsys.readouterr()
    assert code == 2 and printed.out == "" and not out.exists()
    assert printed.err.count("\n") == 1 and printed.err.startswith(f"generate.py: error: {template}:2: ")
    assert message in printed.err, printed.err


UNKNOWN = [
    ("{{value nosuch bound_test}}", "unknown study 'nosuch'"),
    ("{{value fig3-critics-paper-steps probe_acc}}", "unknown metric 'probe_acc' in study fig3-critics-paper-steps"),
    ("{{claim fig3-separable-above-concat estimate}}", "unknown claim 'fig3-separable-above-concat' in paper; did "
                                                       "you mean fig3-separable-above-concat.torch"),
    ("{{claim pixel-clean.torch p}}", "unknown field 'p' of a claim (fields: estimate, ci, verdict, n, test, paper)"),
    ('{{claims "fig3 critic"}}', "unknown finding 'fig3 critic' in paper (findings: pixel baseline,"),
    ('{{finding "fig4c non-i.i.d." sklearn}}', "unknown field 'sklearn' of finding 'fig4c non-i.i.d.' (fields: "
                                               "verdict, note)"),
    ("{{value fig3-critics-paper-steps bound_test where=critic=concatt}}", "where: unknown level 'concatt' of critic"),
    ("{{value fig3-critics-paper-steps bound_test where=crit=concat}}", "unknown factor 'crit' in study fig3-critics-paper-steps"),
    ("{{value fig3-critics-paper-steps bound_test where=critic}}", "where: expected KEY=VALUE"),
    ("{{value fig3-critics-paper-steps bound_test at=7}}", "at: no evaluation at step 7 in study fig3-critics-paper-steps (steps: 0,"),
    ("{{value fig3-critics-paper-steps bound_test at=last}}", "at: expected final or a step, got 'last'"),
    ("{{value fig3-critics-paper-steps bound_test stat=median}}", "stat: expected one of mean, sd, n, min, max, mean_sd"),
    ("{{study fig3-critics-paper-steps trainsteps}}", "unknown key 'trainsteps' of study fig3-critics-paper-steps"),
    ("{{calibration fig3-critics-paper-steps}}", "study fig3-critics-paper-steps has no known-MI data"),
]


@pytest.mark.parametrize("body,message", UNKNOWN, ids=[b for b, _ in UNKNOWN])
def test_an_unknown_name_is_one_line_naming_it_and_its_line(source, body, message):
    with pytest.raises(ConfigError) as e:
        rendered(source, f"line one\n\nthree {body} three\n")
    text = str(e.value)
    assert "\n" not in text and text.startswith(f"t.md.in:3: {body}: ") and message in text, text


@pytest.mark.slow
def test_the_script_runs_as_a_command(planted, tmp_path):
    """The file as `python docs/reproduction/generate.py`, from another directory: exit 2 and one line for
    bad input, exit 0 and the files it wrote otherwise."""
    template = tmp_path / "t.md.in"
    template.write_text("{{value fig3-critics-paper-steps nosuch}}\n")
    run = lambda *a: subprocess.run([sys.executable, str(SCRIPT), "--db", planted[1], "--template", str(template),  # noqa: E731
                                     "--out", str(tmp_path / "out.md"), "--no-readme", *a],
                                    capture_output=True, text=True, timeout=300, cwd=tmp_path)
    res = run()
    assert res.returncode == 2 and res.stdout == "" and len(res.stderr.splitlines()) == 1, res.stderr
    assert res.stderr.startswith(f"generate.py: error: {template}:1: {{{{value fig3-critics-paper-steps nosuch}}}}: unknown "
                                 "metric 'nosuch'")
    template.write_text("{{study fig3-critics-paper-steps seeds}} seeds\n")
    res = run()
    assert res.returncode == 0, res.stderr
    assert res.stdout == f"{tmp_path / 'out.md'}\n" and (tmp_path / "out.md").read_text() == "5 seeds\n"
    assert run("--check").returncode == 0


def test_partial_marks_the_studies_not_yet_in_the_database_pending(planted, tmp_path, quick, capsys):
    db = tmp_path / "partial.db"
    shutil.copy(planted[0], db)
    with closing_sql(db) as con:  # fig4c-noniid-paper-steps and pixel-baseline-cpu have not run yet
        for name in ("fig4c-noniid-paper-steps", "pixel-baseline-cpu"):
            sid, = con.execute("SELECT id FROM mimax_studies WHERE name = ?", (name,)).fetchone()
            con.execute("DELETE FROM mimax_evaluations WHERE trial_id IN (SELECT id FROM mimax_trials WHERE "
                        "study_id = ?)", (sid,))
            for table in ("mimax_trials", "mimax_environment"):
                con.execute(f"DELETE FROM {table} WHERE study_id = ?", (sid,))
            con.execute("DELETE FROM mimax_studies WHERE id = ?", (sid,))
        # sec4-metric-paper-steps has started: its trials run and none has evaluated yet
        sid, = con.execute("SELECT id FROM mimax_studies WHERE name = 'sec4-metric-paper-steps'").fetchone()
        con.execute("UPDATE mimax_studies SET status = 'running' WHERE id = ?", (sid,))
        con.execute("UPDATE mimax_trials SET state = 'running' WHERE study_id = ?", (sid,))
        con.execute("DELETE FROM mimax_evaluations WHERE trial_id IN (SELECT id FROM mimax_trials WHERE "
                    "study_id = ?)", (sid,))
    template = tmp_path / "t.md.in"
    template.write_text('{{summary}}\n\n{{claims "fig4c non-i.i.d."}}\n\n{{value fig4c-noniid-paper-steps bound_test}} / '
                        '{{finding "fig4c non-i.i.d." verdict}} / {{claim fig4c-noniid-above-iid ci}} / '
                        '{{claim sec4-kpair-matches-nce.torch verdict}} / {{finding "fig1c adversarial" torch}}'
                        '\n\n{{provenance}}\n')
    args = ["--db", f"sqlite:///{db}", "--template", str(template), "--out", str(tmp_path / "out.md"), "--no-readme"]
    assert quick(args) == 2  # without --partial a missing study is bad input, named
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown study 'pixel-baseline-cpu'" in err, err
    assert quick([*args, "--partial"]) == 0
    assert capsys.readouterr().err == ("generate.py: pending (not in the database yet, or not finished): "
                                       "fig2-conditioning-cpu, fig3-critics-cpu, fig4c-noniid-cpu, "
                                       "fig4c-noniid-paper-steps, pixel-baseline-cpu, sec4-metric-cpu, "
                                       "sec4-metric-paper-steps\n")
    out = (tmp_path / "out.md").read_text()
    assert "| fig4c non-i.i.d. | *pending* | *pending* | *pending* | *pending* |  |" in out
    assert "| pixel baseline | *pending* | *pending* | *pending* | *pending* |  |" in out
    # fig1c's claims against the pixel baseline wait; its other two are untestable at the planted 1,000
    # rounds (EXPECTED), which decides nothing yet. fig4ab and calibration stop before their endpoints.
    assert "| fig1c adversarial | *pending* | *pending* | *pending* | 0 / 0 / 0 / 2 (2 pending) |  |" in out
    assert "| fig4ab encoders | untestable | untestable | untestable | 0 / 0 / 0 / 3 |  |" in out
    assert "| calibration | – (no probe) | – (no probe) | untestable | 0 / 0 / 0 / 5 |  |" in out
    assert all(EXPECTED[c.id] == "untestable" for c in load_claims("paper")[0].claims
               if c.kind == "finding" and c.finding in ("fig4ab encoders", "calibration"))
    fig4c = [c.id for c in load_claims("paper")[0].claims if c.finding == "fig4c non-i.i.d."]
    assert all(f"| `{cid}` | *pending* |" in out for cid in fig4c)
    assert "| §4 metric learning | *pending* | *pending* | *pending* | *pending* |  |" in out
    assert "*pending* / *pending* / *pending* / *pending* / *pending*" in out
    assert "7 studies." in out and ("Not in the database yet, or not finished (*pending*): fig2-conditioning-cpu, "
                                    "fig3-critics-cpu, fig4c-noniid-cpu, fig4c-noniid-paper-steps, pixel-baseline-cpu, "
                                    "sec4-metric-cpu, sec4-metric-paper-steps.") in out
    row, = [line for line in out.splitlines() if line.startswith("| sec4-metric-paper-steps |")]
    assert re.fullmatch(r"\| sec4-metric-paper-steps \| \w+ \| running \| 0 / \d+ \| none recorded \| – \|", row), row


def test_a_database_whose_wal_holds_pages_not_in_the_file_is_refused(planted, tmp_path, capsys):
    db = tmp_path / "live.db"
    shutil.copy(planted[0], db)
    Path(f"{db}-wal").write_bytes(b"\0" * 32)
    assert generate.main(["--db", f"sqlite:///{db}", "--out", str(tmp_path / "out.md"), "--no-readme"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "live.db-wal holds 32 bytes not yet in the file" in err


def test_a_readme_without_the_size_markers_is_refused(planted, tmp_path, quick, capsys):
    readme = tmp_path / "README.md"
    readme.write_text("no markers here\n")
    template = tmp_path / "t.md.in"
    template.write_text("x\n")
    code = quick(["--db", planted[1], "--template", str(template), "--out", str(tmp_path / "o.md"),
                  "--readme", str(readme)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "no <!-- reference-db-size -->" in err
    assert readme.read_text() == "no markers here\n" and not (tmp_path / "o.md").exists()


def test_the_readme_has_the_size_markers_the_generator_fills():
    text = (ROOT / "README.md").read_text()
    assert len(generate.SIZE.findall(text)) == 1 and "docs/reference/reproduce-cpu.db" in text
