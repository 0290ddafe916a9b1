"""Registering components in-process: the decorator, the refusals, entry points, and a trial config naming
its plugins that resolves, trains and refuses what it must."""

from __future__ import annotations

import textwrap

import pytest
import torch

import mimax
from mimax.errors import ConfigError
from mimax.trainables.config import resolve
from mimax.trainables.critics import CRITICS, Critic
from mimax.trainables.loop import Trainer
from mimax.trainables.plugins import BUILTIN, FAMILIES, load_entry_points, register, reset


def critic_class(name: str, module: str = __name__) -> type:
    cls = type("Doubled", (Critic,), {"name": name, "has_parameters": False, "__module__": module,
                                      "forward": lambda self, u, v: 2 * u @ v.T})
    return cls


def config(critic: str, **extra) -> dict:
    return {"data": {"name": "gaussian", "dim": 4}, "encoder": {"name": "mlp", "hidden": [8], "out_dim": 4},
            "critic": {"name": critic}, "estimator": {"name": "nce"}, "train": {"steps": 4, "batch_size": 8},
            "eval": {"every": 2, "probe": "none", "bound_batches": 1}, **extra}


def test_the_decorator_registers_and_returns_the_class():
    assert mimax.register is register
    cls = critic_class("doubled")
    assert mimax.register("critic")(cls) is cls and CRITICS["doubled"] is cls
    resolved = resolve(config("doubled"))
    assert resolved.critic[0] is cls
    u, v = torch.randn(3, 4), torch.randn(2, 4)
    torch.testing.assert_close(cls(cls.Params(), 4, 4)(u, v), 2 * u @ v.T)
    records = [r for (r,) in Trainer(config("doubled")).run()]
    assert [r["step"] for r in records] == [0, 2, 4]


def test_the_same_class_again_is_no_clash_but_another_class_of_that_name_is():
    register("critic", critic_class("doubled"))
    register("critic", critic_class("doubled"))  # the module imported again (e.g. reloaded)
    with pytest.raises(ConfigError, match=r"^plugins: critic 'doubled' \(elsewhere\.Doubled\) clashes with "
                                          r"test_register\.Doubled, registered under that name already$"):
        register("critic", critic_class("doubled", module="elsewhere"))


@pytest.mark.parametrize("family, cls, message", [
    ("critics", critic_class("x"), r"unknown component family 'critics' \(choose from data, encoder, critic"),
    ("estimator", critic_class("x"), r"estimator .* must subclass mimax\.trainables\.estimators\.Estimator"),
    ("critic", type("Nameless", (Critic,), {"forward": lambda self, u, v: u @ v.T}), "declares no name"),
    ("critic", critic_class("cosine"), "clashes with the built-in critic 'cosine'"),
])
def test_refusals_are_one_line(family, cls, message):
    with pytest.raises(ConfigError, match=message) as err:
        register(family, cls)
    assert "\n" not in str(err.value)


def test_a_config_names_modules_that_are_imported_before_look_up(tmp_path, monkeypatch):
    (tmp_path / "my_critics.py").write_text(textwrap.dedent("""\
        from mimax.trainables.critics import Critic
        from mimax.trainables.plugins import register

        @register("critic")
        class Tripled(Critic):
            name = "tripled"
            has_parameters = False

            def forward(self, u, v):
                return 3 * u @ v.T
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ConfigError, match=r"critic\.name: unknown critic 'tripled'"):
        resolve(config("tripled"))
    resolved = resolve(config("tripled", plugins=["my_critics"]))
    assert resolved.critic[0].__module__ == "my_critics"
    assert resolved.config.to_dict()["plugins"] == ["my_critics"]  # stored with the trial, for every worker
    assert "plugins" not in resolve(config("bilinear")).config.to_dict()  # older configs hash as before
    with pytest.raises(ConfigError, match=r"^plugins\.0: string should match pattern"):
        resolve(config("tripled", plugins=["not a module"]))


def test_after_reset_only_the_configs_own_plugins_are_registered_again(tmp_path, monkeypatch):
    """What a Ray worker does between trials: a module imports once per process, yet each trial sees the
    built-ins plus its own plugins (and entry points), as in a fresh process."""
    (tmp_path / "helper_critics.py").write_text(textwrap.dedent("""\
        from mimax.trainables.critics import Critic

        class Halved(Critic):
            name = "halved"
            has_parameters = False

            def forward(self, u, v):
                return u @ v.T / 2
    """))
    (tmp_path / "my_plugin.py").write_text(textwrap.dedent("""\
        from mimax.trainables.plugins import register
        from helper_critics import Halved

        register("critic", Halved)  # a class defined in another module
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    first = resolve(config("halved", plugins=["my_plugin"])).critic[0]
    reset()
    assert CRITICS == BUILTIN["critic"]
    with pytest.raises(ConfigError, match=r"critic\.name: unknown critic 'halved'"):
        resolve(config("halved"))  # named, not listed: refused as in a fresh process
    assert resolve(config("halved", plugins=["my_plugin"])).critic[0] is first  # registered again, same class
    reset()
    assert resolve(config("halved", plugins=["my_plugin"])).critic[0] is first


def test_entry_points_of_an_installed_package_register_on_first_look_up(tmp_path, monkeypatch):
    site = tmp_path / "site"
    dist = site / "fake_plugin-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: fake-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[mimax.components]\nquad = fake_plugin:Quadrupled\n")
    (site / "fake_plugin.py").write_text(textwrap.dedent("""\
        from mimax.trainables.critics import Critic

        class Quadrupled(Critic):
            name = "quadrupled"
            has_parameters = False

            def forward(self, u, v):
                return 4 * u @ v.T
    """))
    monkeypatch.syspath_prepend(str(site))
    assert "quadrupled" not in CRITICS
    assert resolve(config("quadrupled")).critic[0].__module__ == "fake_plugin"

    (dist / "entry_points.txt").write_text("[mimax.components]\nbroken = fake_plugin_missing\n")
    load_entry_points.cache_clear()
    with pytest.raises(ConfigError, match=r"^entry point 'broken' of group mimax\.components: cannot import "
                                          r"'fake_plugin_missing': ModuleNotFoundError"):
        resolve(config("bilinear"))


def test_every_family_of_the_contract_has_a_registry():
    from mimax.contract import FAMILIES as CONTRACT_FAMILIES

    assert tuple(FAMILIES) == CONTRACT_FAMILIES


def test_a_space_names_its_plugins_once_at_the_top_or_in_base():
    from mimax.search_spaces.spec import parse_space

    raw = {"name": "s", "base": {"data": {"name": "gaussian"}}, "objectives": [{"metric": "loss", "direction": "minimize"}]}
    assert parse_space({**raw, "plugins": ["a.b"]}).base["plugins"] == ["a.b"]
    with pytest.raises(ConfigError, match="^plugins: set plugins at the top level or in base, not both$"):
        parse_space({**raw, "plugins": ["a.b"], "base": {"plugins": ["c"]}})


def test_a_forward_that_raises_on_the_tiny_input_is_one_line():
    def forward(self, u, v):
        return u @ v  # v not transposed: no shape fits

    register("critic", type("Raising", (Critic,), {"name": "raising", "forward": forward, "__module__": "m"}))
    with pytest.raises(ConfigError, match=r"^critic\.name: plugin critic 'raising' \(m\.Raising\) raised RuntimeError "
                                          r"on a tiny input: mat1 and mat2 shapes cannot be multiplied \(3x4 and 6x4\)$"):
        resolve(config("raising"))
