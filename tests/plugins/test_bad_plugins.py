"""Bad plugins through the real command line: a module that fails to import, a class that lacks a method,
one whose forward gives the wrong shape, one whose name clashes with a built-in. Each is one line on
stderr, exit code 2, and nothing in the database (launch validates before it creates the study)."""

from __future__ import annotations

import re
import textwrap

import pytest
import yaml
from example_plugin import on_pythonpath
from engine_helpers import query, run

CRITIC = """\
    from mimax.trainables.critics import Critic
    from mimax.trainables.plugins import register

    @register("critic")
    class C(Critic):
        name = "{name}"
    {body}
"""
BAD = {
    "fails_to_import": ("critic_x", "import torch\nraise RuntimeError('the GPU driver is missing')\n",
                        r"^mimax: error: base\.plugins\[0\]: the trial config is rejected: plugins\[0\]: cannot import "
                        r"'fails_to_import': RuntimeError: the GPU driver is missing$"),
    "lacks_forward": ("half", CRITIC.format(name="half", body=""),
                      r"^mimax: error: .*plugins\[0\]: lacks_forward: critic 'half' \(lacks_forward\.C\) lacks the "
                      r"method forward"),
    "wrong_shape": ("rowsum", CRITIC.format(name="rowsum", body="    def forward(self, u, v):\n"
                                                                 "            return (u @ v.T).sum(dim=1)\n"),
                    r"^mimax: error: base\.critic\.name: the trial config is rejected: critic\.name: plugin critic 'rowsum' "
                    r"\(wrong_shape\.C\) returned \(3,\) for u \(3, 8\) and v \(10, 8\); expected scores \(3, 10\)"),
    "clashes": ("bilinear", CRITIC.format(name="bilinear", body="    def forward(self, u, v):\n"
                                                                 "            return u @ v.T\n"),
                r"^mimax: error: .*plugins\[0\]: clashes: critic 'bilinear' \(clashes\.C\) clashes with the built-in "
                r"critic 'bilinear'; give it another name"),
}


def space(module: str, critic: str) -> dict:
    return {"name": "bad-plugin", "plugins": [module],
            "base": {"data": {"name": "gaussian", "dim": 4}, "encoder": {"name": "mlp", "hidden": [8], "out_dim": 8},
                     "critic": {"name": critic}, "estimator": {"name": "nce"},
                     "train": {"steps": 10, "batch_size": 16}, "eval": {"every": 5, "probe": "none"}},
            "objectives": [{"metric": "bound_test", "direction": "maximize"}], "trials": 1}


@pytest.mark.parametrize("module", sorted(BAD))
def test_a_bad_plugin_is_one_line_exit_2_and_nothing_in_the_database(module, tmp_path, monkeypatch):
    critic, source, message = BAD[module]
    (tmp_path / "mods").mkdir()
    (tmp_path / "mods" / f"{module}.py").write_text(textwrap.dedent(source))
    on_pythonpath(monkeypatch, tmp_path / "mods")
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(space(module, critic)))
    url = f"sqlite:///{tmp_path / 'store.db'}"

    r = run("launch", path, "--name", "bad", "--db", url, "--results-dir", tmp_path / "res", cwd=tmp_path, timeout=120)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert re.match(message, lines[0]), lines[0]
    assert not (tmp_path / "store.db").exists() or query(url, "SELECT name FROM mimax_studies") == []
    assert not (tmp_path / "res").exists()

    # the same trial config given to `mimax train` fails alike, naming the same problem
    config = tmp_path / "trial.yaml"
    config.write_text(yaml.safe_dump({**space(module, critic)["base"], "plugins": [module]}))
    r = run("train", config, "--json", cwd=tmp_path, timeout=120)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert lines[0].split("rejected: ")[-1].split(" [")[0] in r.stderr
