"""mimax.contract: which metrics a trial of a config reports, checked against what ``mimax train`` really
reports for an InfoMax trial (with the Jacobian diagnostics) and an adversarial one; the config's sections;
the one YAML loader."""

from __future__ import annotations

import json
import math

import pytest
import yaml

from mimax.cli import main
from mimax.contract import (FAMILIES, METRICS, MODES, SECTIONS, TrialConfig, ceiling_label, load_yaml, metric,
                            mode_metrics)
from mimax.errors import ConfigError

INFOMAX = {
    "data": {"name": "digits"}, "encoder": {"name": "mlp", "hidden": [16], "out_dim": 8},
    "critic": {"name": "bilinear"}, "estimator": {"name": "nce"},
    "train": {"steps": 2, "batch_size": 16}, "eval": {"every": 2, "bound_batches": 1, "jacobian": True,
                                                      "jacobian_batch": 4},
}
ADVERSARIAL = {
    "data": {"name": "digits"}, "encoder": {"name": "mlp", "hidden": [16], "out_dim": 8},
    "train": {"steps": 2, "batch_size": 16, "mode": "adversarial"}, "eval": {"every": 2},
    "adversarial": {"warmup": 1, "classifier_steps": 1},
}


def reported_keys(tmp_path, capsys, config: dict) -> set[str]:
    """The metric keys a ``mimax train --json`` run of ``config`` reports with a value."""
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["train", str(path), "--json"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    start, evals = records[0], [r for r in records if r["event"] == "eval"]
    keys = {f"params.{k}" for k, n in start["params"].items() if n}
    return keys | {k for r in evals for k, v in r.items() if v is not None and k not in ("event", "step")}


@pytest.mark.parametrize("config", [INFOMAX, ADVERSARIAL], ids=["infomax", "adversarial"])
def test_a_trial_reports_what_the_contract_says(tmp_path, capsys, config):
    keys = reported_keys(tmp_path, capsys, config)
    cfg = TrialConfig(**config)
    for key in keys:  # everything reported is a metric, one that this config reports
        assert metric(key) is not None and metric(key).missing(cfg) is None, key
    promised = [m for m in METRICS if m.missing(cfg) is None and m.shown != "probe_accuracy.LABEL"]
    optional = {"params.estimator"}  # an estimator without parameters (NCE) has none to count
    for m in promised:  # and every metric the contract promises for it is reported
        assert m.name in optional or any(m.matches(k) for k in keys), m.shown or m.name


def test_what_a_config_lacks_for_a_metric():
    infomax, adversarial = TrialConfig(**INFOMAX), TrialConfig(**ADVERSARIAL, critic=None)
    no_probe = TrialConfig(**dict(INFOMAX, eval={"every": 1, "probe": "none"}))
    assert metric("bound_test").missing(adversarial) == "train.mode infomax"
    assert metric("classifier_accuracy").missing(infomax) == "train.mode adversarial"
    assert metric("probe_accuracy").missing(no_probe) == "a probe, but eval.probe is 'none'"
    assert metric("probe_accuracy.fashion").missing(no_probe) == "a probe, but eval.probe is 'none'"
    assert metric("log_cond_p95").missing(no_probe) == "eval.jacobian true"
    assert metric("log_cond_p2.5").missing(infomax) is None
    assert mode_metrics("adversarial") == ("classifier_accuracy",)
    assert mode_metrics("infomax") == ("bound_train", "bound_test")


@pytest.mark.parametrize("key", ["probe_acc", "probe_accuracy.", "probe_accuracy.a.b", "log_cond_pX", "params.g3"])
def test_unknown_metrics(key):
    assert metric(key) is None


def test_the_modes_are_the_trainers():
    from mimax.trainables.modes import MODES as STRATEGIES

    assert set(MODES) == set(STRATEGIES)


def test_sections_and_families():
    assert SECTIONS == ("data", "encoder", "critic", "estimator", "train", "eval", "adversarial", "device", "init",
                        "plugins")
    assert set(FAMILIES) - set(SECTIONS) == {"probe"}  # its section is eval.probe


def test_device_is_checked_by_the_model():
    with pytest.raises(Exception, match="expected cpu, cuda, cuda:N or auto, got 'tpu'"):
        TrialConfig(**dict(INFOMAX, device="tpu"))
    assert TrialConfig(**dict(INFOMAX, device="cuda:1")).device == "cuda:1"


@pytest.mark.parametrize("text, needle", [
    ("a: 1\nb: 2\na: 3\n", "line 3: duplicate key 'a'"),
    ("a: [1,\n", "is not valid YAML"),
])
def test_load_yaml_errors_are_one_line(tmp_path, text, needle):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=needle) as err:
        load_yaml(str(path), "config")
    assert "\n" not in str(err.value) and str(path) in str(err.value)
    with pytest.raises(ConfigError, match="config file not found"):
        load_yaml(str(tmp_path / "none.yaml"), "config")
    with pytest.raises(ConfigError, match="expected a space file, got a directory"):
        load_yaml(str(tmp_path), "space")


def test_yaml_reads_exponent_floats_without_a_dot_as_numbers(tmp_path):
    # PyYAML (YAML 1.1) reads 1e-3 as the text "1e-3", which the strict configs would refuse
    path = tmp_path / "c.yaml"
    path.write_text("lr: 1e-3\nb: -2E+4\nc: '1e-3'\nd: 1.5e-4\ne: e5\nf: 12\n")
    data = load_yaml(str(path), "config")
    assert data == {"lr": 0.001, "b": -20000.0, "c": "1e-3", "d": 0.00015, "e": "e5", "f": 12}
    assert isinstance(data["f"], int)


# ---- bytes: encodings, control characters, nesting, size (issue 25: tracebacks on file input) ----------

@pytest.mark.parametrize("data, needle", [
    ("seed: café\n".encode("latin-1"), r"is not UTF-8 text: byte 0xe9 at offset 9 \(line 1\): invalid continuation"),
    (b"a: 1\nb: \xff\xfe\xfd\n", r"is not UTF-8 text: byte 0xff at offset 8 \(line 2\)"),
    (b"a: \xed\xa0\x80\n", r"is not UTF-8 text: byte 0xed at offset 3"),  # a surrogate, which UTF-8 excludes
    (b"a: \xc0\xaf\n", r"is not UTF-8 text: byte 0xc0 at offset 3"),  # an overlong '/'
    (b"a: \xe2\x82", r"is not UTF-8 text: byte 0xe2 at offset 3 \(line 1\): unexpected end of data"),
    (b"\xff\xfea\x00:\x00 \x001", r"is not UTF-16-LE text \(by its byte order mark\): byte 0x31 at offset 8"),
    (b"a: 1\x00\n", r"holds the character U\+0000 at line 1, column 5, which YAML does not allow"),
    (b"a: 1\nb: \x07\n", r"holds the character U\+0007 at line 2, column 4"),
    (b"[" * 100_000, r"is nested too deeply \(more than 50 levels\) at line 1"),
    (b"{a: " * 60, r"is nested too deeply \(more than 50 levels\)"),
    (b"- " * 51 + b"1", r"is nested too deeply \(more than 50 levels\)"),
    (b"&a [*a]", r"is nested too deeply \(more than 50 levels\)"),  # a recursive alias: infinitely deep
    (b"a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]\n" + b"".join(
        b"%c: &%c [%s]\n" % (c, c, b", ".join([b"*%c" % (c - 1)] * 10)) for c in b"bcdef"),
     r"holds more than 100,000 values with its aliases expanded"),
    (b"{[1]: 2}", r"is not valid YAML: found unhashable key at line 1, column 2"),
    (b"a: 2020-13-45", r"is not valid YAML: month must be in 1..12"),
    (b"a: !!int 0x", r"is not valid YAML: invalid literal for int"),
    (b"x" * (2**20 + 1), r"config file .* is larger than 1,048,576 bytes"),
])
def test_a_file_that_is_not_readable_yaml_is_one_line_naming_what_and_where(tmp_path, data, needle):
    path = tmp_path / "c.yaml"
    path.write_bytes(data)
    with pytest.raises(ConfigError, match=needle) as err:
        load_yaml(str(path), "config")
    assert "\n" not in str(err.value) and str(path) in str(err.value)


@pytest.mark.parametrize("encoding, bom", [("utf-8", b""), ("utf-8", b"\xef\xbb\xbf"), ("utf-16-le", b"\xff\xfe"),
                                           ("utf-16-be", b"\xfe\xff"), ("utf-32-le", b"\xff\xfe\x00\x00"),
                                           ("utf-32-be", b"\x00\x00\xfe\xff")])
def test_utf8_and_what_a_byte_order_mark_names_are_read(tmp_path, encoding, bom):
    path = tmp_path / "c.yaml"
    path.write_bytes(bom + "seed: 3\nname: café ✓\n".encode(encoding))
    assert load_yaml(str(path), "config") == {"seed": 3, "name": "café ✓"}


def test_nesting_up_to_the_limit_and_a_file_up_to_the_size_limit_are_read(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_bytes(b"[" * 50 + b"]" * 50)
    value = load_yaml(str(path), "config")
    for _ in range(49):
        (value,) = value
    assert value == []
    body = b"a: 1\n"
    path.write_bytes(body + b"#" * (2**20 - len(body) - 1) + b"\n")  # exactly the limit
    assert load_yaml(str(path), "config") == {"a": 1}


def test_a_ceiling_is_named_by_its_formula_and_k_is_the_batch_size():
    assert ceiling_label(math.log(128), 128) == "log K = 4.852 (K = 128)"
    assert ceiling_label(math.log(128), 128, digits=4, unit="nats") == "log K = 4.8520 nats (K = 128)"
    assert ceiling_label(math.log(2), 128) == "log 2 = 0.693"  # the soft triplet: InfoNCE with K = 2
    assert ceiling_label(math.log(128 / 0.1855), 128) == "6.537"  # a plugin's own formula: no K worked backwards
    assert ceiling_label(math.log(690), None) == "6.537"
