"""``mimax spaces list | show | validate``."""

from __future__ import annotations

import json

from spaces_helpers import run_cli, valid, write

from mimax.search_spaces import preset_names
from mimax.trainables.config import validate


def test_list_shows_every_preset_with_its_counts(capsys):
    assert run_cli(["spaces", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:4] == ["NAME", "CONFIGS", "SEEDS", "BUDGET"]
    rows = {line.split()[0]: line.split()[1:4] for line in lines[1:]}
    assert sorted(rows) == preset_names()
    assert rows["fig3-critics"] == ["6", "2", "smoke"]  # 3 critics x 2 estimators, 2 smoke seeds
    assert rows["fig4ab-encoders"][0] == "8" and rows["calibration"][0] == "70"

    assert run_cli(["spaces", "list", "--budget", "paper", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert (rows["fig3-critics"]["n_configs"], rows["fig3-critics"]["seeds"]) == (6, 20)
    assert rows["explore"]["sampler"] == "tpe" and rows["fig3-critics"]["description"].startswith("Fig. 3")


def test_show_json_lists_every_grid_config(capsys):
    assert run_cli(["spaces", "show", "fig3-critics", "--budget", "paper", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {"name", "sampler", "n_configs", "seeds", "configs"} <= set(out)
    assert (out["name"], out["sampler"], out["n_configs"], out["seeds"]) == ("fig3-critics", "grid", 6, 20)
    assert len(out["configs"]) == 6 and all("seed" not in c for c in out["configs"])
    pairs = {(c["critic"]["name"], c["estimator"]["name"]) for c in out["configs"]}
    assert pairs == {(c, e) for c in ("bilinear", "separable", "concat") for e in ("nce", "nwj")}
    for c in out["configs"]:
        assert validate({**c, "seed": 1}).train.steps == 21000


def test_show_json_of_a_sampled_space_has_no_configs(capsys):
    assert run_cli(["spaces", "show", "explore", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["sampler"], out["n_configs"], out["seeds"], out["configs"]) == ("tpe", 4, 1, None)


def test_show_text_of_a_file(tmp_path, capsys):
    assert run_cli(["spaces", "show", write(tmp_path, valid())]) == 0
    out = capsys.readouterr().out
    assert out.startswith("test-space: a small sampled space")
    assert "10 x 1 seeds = 10 trials" in out and "critic.hidden" in out and "when critic.name in" in out


def test_show_text_of_a_grid_lists_configurations(capsys):
    assert run_cli(["spaces", "show", "fig4ab-encoders"]) == 0
    out = capsys.readouterr().out
    assert "configurations (8):" in out
    assert "encoder.name=convnet estimator.name=nwj estimator.target=4.0" in out


def test_validate_prints_ok_with_the_count(capsys):
    assert run_cli(["spaces", "validate", "fig3-critics"]) == 0
    assert capsys.readouterr().out.strip() == "ok: fig3-critics (6 configurations)"


def test_errors_are_one_line_and_exit_2(tmp_path, capsys):
    assert run_cli(["spaces", "show", "fig3-critics", "--budget", "huge"]) == 2
    assert capsys.readouterr().err == (
        "mimax: error: budget: unknown budget 'huge' for space 'fig3-critics' (choose from smoke, cpu, paper-steps, paper)\n")
    assert run_cli(["spaces", "validate", str(tmp_path / "missing.yaml")]) == 2
    assert "space file not found" in capsys.readouterr().err


def test_a_reader_that_leaves_early_gets_no_traceback(tmp_path):
    """`mimax spaces show BIG --json | head -c 100`: the pipe closes under the writer (BrokenPipeError),
    which is no error of the user's: no traceback on stderr. 3,000 configurations print ~800 kB, far past
    a pipe's buffer, so the writer is still writing when the reader leaves."""
    import subprocess
    import sys

    grid = ", ".join(f"{1e-5 * (i + 1):.6e}" for i in range(3000))
    space = tmp_path / "big.yaml"
    space.write_text(f"""name: big
description: a big grid
base:
  data: {{name: digits}}
  encoder: {{name: mlp, hidden: [8], out_dim: 4}}
  critic: {{name: bilinear}}
  estimator: {{name: nce}}
  train: {{steps: 10, batch_size: 16}}
  eval: {{every: 10, probe: none, bound_batches: 1}}
params:
  train.lr: {{grid: [{grid}]}}
seeds: 1
sampler: {{name: grid, seed: 0}}
objectives: [{{metric: bound_test, direction: maximize}}]
""")
    proc = subprocess.Popen([sys.executable, "-m", "mimax.cli", "spaces", "show", str(space), "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout.read(100)
    proc.stdout.close()  # the reader leaves before the writer is done
    err = proc.stderr.read().decode()
    proc.wait(timeout=120)
    assert "Traceback" not in err and "BrokenPipeError" not in err, err
