"""Bad input is one line naming the key and exit code 2; good input is completed with defaults."""

import copy

import pytest
import yaml

from mimax.cli import main
from mimax.errors import ConfigError
from mimax.trainables.config import apply_overrides, validate

BASE = {
    "data": {"name": "mnist"},
    "encoder": {"name": "mlp"},
    "critic": {"name": "bilinear"},
    "estimator": {"name": "nce"},
    "train": {"steps": 2000, "batch_size": 128, "lr": 1.0e-4},
    "eval": {"every": 500, "probe": "torch"},
    "seed": 0,
}


def with_(**changes):
    cfg = copy.deepcopy(BASE)
    for dotted, value in changes.items():
        node = cfg
        *parents, last = dotted.split("__")
        for p in parents:
            node = node.setdefault(p, {})
        if value is _DELETE:
            del node[last]
        else:
            node[last] = value
    return cfg


_DELETE = object()

BAD = [
    # (config, path named in the error, words in the message)
    (with_(encoder__name="transformer"), "encoder.name", "unknown encoder 'transformer'"),
    (with_(critic__name="mystery"), "critic.name", "unknown critic"),
    (with_(estimator__name="infonce"), "estimator.name", "unknown estimator"),
    (with_(data__name="imagenet"), "data.name", "unknown data"),
    (with_(eval__probe="svm"), "eval.probe.name", "unknown eval.probe"),
    (with_(init="keras"), "init", "'torch' or 'tf', got 'keras'"),
    (with_(train__adam="tf2"), "train.adam", "'torch' or 'tf1', got 'tf2'"),
    (with_(eval__probe=[]), "eval.probe", "an empty list"),
    (with_(eval__probe=["torch", "torch"]), "eval.probe[1].label", "a second probe labelled 'torch'"),
    (with_(eval__probe=["torch", {"name": "svm"}]), "eval.probe[1].name", "unknown eval.probe[1] 'svm'"),
    (with_(eval__probe=["torch", {"name": "torch", "label": "a b"}]), "eval.probe[1].label", "got 'a b'"),
    (with_(eval__probe=["sklearn", {"name": "torch", "C": 0}]), "eval.probe[1].C", "greater than 0"),
    (with_(eval__probe=["torch", 3]), "eval.probe[1]", "expected a mapping with a 'name', got 3"),
    (with_(train__steps="many"), "train.steps", "integer"),
    (with_(train__lr=-1.0), "train.lr", "greater than 0"),
    (with_(train__batch_size=1.5), "train.batch_size", "integer"),
    (with_(train__steps=_DELETE), "train.steps", "missing required key"),
    (with_(eval=_DELETE), "eval", "missing required key"),
    (with_(encoder__widht=3), "encoder.widht", "unknown key"),
    (with_(critic__hidden="wide"), "critic.hidden", "unknown key"),  # bilinear has no hidden
    (with_(optimiser="sgd"), "optimiser", "unknown key"),
    (with_(estimator__tau=-1.0, estimator__name="smile"), "estimator.tau", "greater than 0"),
    (with_(data={"name": "gaussian", "dim": 2, "mi": 1.0}, encoder={"name": "convnet"}, eval={"every": 5, "probe": "none"}),
     "encoder", "image"),
    (with_(data={"name": "gaussian", "dim": 3, "mi": 1.0}, encoder={"name": "realnvp"}, eval={"every": 5, "probe": "none"}),
     "encoder", "even"),
    (with_(data={"name": "gaussian", "dim": 2, "mi": 1.0}, encoder={"name": "identity"}), "eval.probe", "labels"),
    (with_(train__mode="adversarial"), "critic", "not used"),
    (with_(critic=_DELETE), "critic.name", "missing required key"),
    (with_(device="tpu"), "device", "tpu"),
]


@pytest.mark.parametrize("cfg,path,words", BAD, ids=[b[1] + ":" + b[2] for b in BAD])
def test_bad_config_names_the_key(cfg, path, words):
    with pytest.raises(ConfigError) as info:
        validate(cfg)
    assert info.value.path.startswith(path), str(info.value)
    assert words in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("cfg,path,words", BAD[:6] + BAD[8:11] + BAD[14:17], ids=lambda x: None)
def test_cli_bad_config_is_one_line_and_exit_2(tmp_path, capsys, cfg, path, words):
    f = tmp_path / "c.yaml"
    f.write_text(yaml.safe_dump(cfg))
    assert main(["train", str(f), "--json"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and path in lines[0] and words in lines[0]


def test_cli_bad_override_and_missing_file(tmp_path, capsys):
    f = tmp_path / "c.yaml"
    f.write_text(yaml.safe_dump(BASE))
    assert main(["train", str(f), "--set", "encoder.name"]) == 2
    assert "--set" in capsys.readouterr().err
    assert main(["train", str(tmp_path / "nope.yaml")]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["train", str(f), "--set", "encoder.name=resnet"]) == 2
    assert "encoder.name: unknown encoder 'resnet'" in capsys.readouterr().err


def test_defaults_are_filled_in_so_the_stored_config_says_what_ran():
    cfg = validate(BASE).to_dict()
    assert cfg["encoder"] == {"name": "mlp", "hidden": [300, 300], "out_dim": 100}
    assert cfg["critic"] == {"name": "bilinear"} or set(cfg["critic"]) >= {"name"}
    assert cfg["eval"]["probe"]["name"] == "torch"
    assert cfg["estimator"]["target"] is None
    # Validating the completed config again is a fixed point.
    assert validate(cfg).to_dict() == cfg


def test_overrides():
    cfg = apply_overrides(BASE, ["encoder.name=convnet", "train.lr=3e-4", "estimator.target=2"])
    assert cfg["encoder"] == {"name": "convnet"}
    assert cfg["train"]["lr"] == 3e-4 and cfg["estimator"]["target"] == 2
    # a value reads as in a config file (YAML 1.2 floats); text that is not YAML stays text
    cfg = apply_overrides(BASE, ["train.lr=1E+2", "data.name=inf", "encoder.name=a: b: c", "eval.probe={x: 1, x: 2}"])
    assert cfg["train"]["lr"] == 100.0 and isinstance(cfg["train"]["lr"], float)
    assert cfg["data"]["name"] == "inf" and cfg["encoder"] == {"name": "a: b: c"}
    assert cfg["eval"]["probe"] == "{x: 1, x: 2}"  # a duplicate key is not YAML a config file accepts
    # A component's params go when its name changes, so old params never leak into a new component.
    cfg = apply_overrides(with_(critic={"name": "separable", "hidden": 50}), ["critic.name=bilinear"])
    assert cfg["critic"] == {"name": "bilinear"}
    # A string section can be extended with params.
    cfg = apply_overrides(with_(critic="separable"), ["critic.hidden=7"])
    assert cfg["critic"] == {"name": "separable", "hidden": 7}
    validate(cfg)


def test_nothing_to_train_is_refused():
    cfg = with_(data={"name": "gaussian", "dim": 2, "mi": 1.0}, encoder={"name": "identity"},
                critic={"name": "inner"}, eval={"every": 5, "probe": "none"})
    with pytest.raises(ConfigError, match="critic.name: .*nothing to train"):
        validate(cfg)
    cfg["estimator"] = {"name": "tuba"}  # TUBA learns a baseline: something to train
    validate(cfg)


def test_bare_component_names_are_shorthand():
    cfg = with_(data="mnist", encoder="mlp", critic="bilinear", estimator="nce")
    full = validate(cfg).to_dict()
    assert full["encoder"]["name"] == "mlp" and full["data"]["name"] == "mnist"
    out = apply_overrides(cfg, ["eval.probe.name=sklearn", "encoder.out_dim=8"])
    assert out["eval"]["probe"] == {"name": "sklearn"} and out["encoder"] == {"name": "mlp", "out_dim": 8}


def test_cli_checkpoint_of_another_config_is_one_line(tmp_path, capsys, small_config):
    f = tmp_path / "c.yaml"
    f.write_text(yaml.safe_dump(small_config))
    ck = str(tmp_path / "run.pt")
    assert main(["train", str(f), "--json", "--checkpoint", ck, "--set", "train.steps=10"]) == 0
    capsys.readouterr()
    assert main(["train", str(f), "--json", "--checkpoint", ck, "--set", "train.steps=20"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("mimax: error: --checkpoint:") and "different trial config" in err[0]


def test_the_protocol_keys_are_stored_only_when_set():
    # init, train.adam: left out of the stored config at their defaults, so older studies hash the same
    plain = validate(BASE).to_dict()
    assert "init" not in plain and "adam" not in plain["train"]
    paper = validate(with_(init="tf", train__adam="tf1")).to_dict()
    assert paper["init"] == "tf" and paper["train"]["adam"] == "tf1"


def test_a_list_of_probes_is_stored_complete_with_its_labels():
    cfg = validate(with_(eval__probe=[{"name": "sklearn", "tol": 0.1}, {"name": "torch", "label": "fast"}]))
    first, second = cfg.to_dict()["eval"]["probe"]
    assert first == {"name": "sklearn", "C": 10.0, "tol": 0.1, "max_iter": 100, "random_state": 0}
    assert second["label"] == "fast" and second["max_iter"] == 10  # defaults filled in
