"""The trial contract, free of torch: what a trial config is, what it is made of, what it reports, and the
records its Ray adapter hands to the study.

``search_spaces``, ``study``, ``analysis`` and ``trainables`` import it instead of keeping copies. The
component sections stay ``dict | str`` here: their registries need torch, so ``trainables.config.resolve``
validates them (and fills their defaults in).

- A new component family: add it to ``FAMILIES`` (and its section to ``TrialConfig``).
- A new training mode: add it to ``MODES``; give the metrics only it reports ``mode=`` in ``METRICS``.
- A new metric: add a ``Metric`` to ``METRICS`` (a family of names, like ``log_cond_p50``, as a pattern);
  a float reported at every evaluation that deserves its own database column goes in ``EVAL_FLOATS``
  (and a migration).
"""

from __future__ import annotations

import codecs
import json
import math
import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal, NotRequired, TypedDict

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

from mimax.errors import ConfigError

# ---- the trial config -----------------------------------------------------------------------------

MODES = ("infomax", "adversarial")
INITS = ("torch", "tf")  # how layers start: PyTorch's defaults, or Keras' (the paper's notebook)
# Speed switches of the infomax training step, left out of a stored config at these defaults (below).
SPEED_DEFAULTS = {"precision": "fp32", "compile": "none"}
# Keys added after studies were stored: left out of a stored config at these defaults, so a config stored
# before they existed hashes, compares and resumes as the same config. (section or None, key) -> default.
LATER_DEFAULTS = {**{("train", k): v for k, v in SPEED_DEFAULTS.items()}, ("train", "adam"): "torch",
                  (None, "init"): "torch", (None, "plugins"): []}
PROBE_LABEL = r"[A-Za-z0-9_-]+"  # a probe's label names its metric, probe_accuracy.<label>
MODULE_NAME = r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*"  # a plugin module, pkg.mod


INT_MAX = 2**31 - 1  # the database's INTEGER on PostgreSQL; beyond it a count or a seed is a typo anyway


def _check_ints(value: Any) -> None:
    if isinstance(value, int) and not isinstance(value, bool) and not -INT_MAX <= value <= INT_MAX:
        raise ValueError(f"expected an integer within ±{INT_MAX}, got {value}")
    if isinstance(value, (list, tuple)):
        for item in value:
            _check_ints(item)


class StrictModel(BaseModel):
    """A config model: unknown keys, a value of another type (true for a number, text for a number), NaN
    or infinity, and an integer beyond 32 bits are errors, never coerced."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)

    @field_validator("*")
    @classmethod
    def _int_range(cls, value: Any) -> Any:
        _check_ints(value)
        return value


class TrainConfig(StrictModel):
    steps: int = Field(ge=0)
    batch_size: int = Field(default=128, ge=2)
    lr: float = Field(default=1e-4, gt=0)
    mode: Literal[MODES] = "infomax"
    # Speed switches for the infomax training step (evaluation always runs in float32, uncompiled):
    # bf16 autocast of the encoders and critic (the estimator sees float32 scores), and torch.compile
    # of the step's forward ("reduce-overhead" adds CUDA graphs on a GPU).
    precision: Literal["fp32", "bf16"] = "fp32"
    compile: Literal["none", "default", "reduce-overhead"] = "none"
    # Adam's ε as PyTorch adds it (to the bias-corrected √v̂) or as TF1's AdamOptimizer, which the paper's
    # notebook uses, adds it (to the uncorrected √v); they differ early and for tiny gradients.
    adam: Literal["torch", "tf1"] = "torch"


class EvalConfig(StrictModel):
    every: int = Field(ge=1)
    # One probe (a name or a section), "none", or a list of probes: each one's accuracy is recorded as
    # probe_accuracy.<label> (label: its ``label``, else its name) and probe_accuracy is the first one's.
    probe: str | dict | list = "torch"
    bound_batches: int = Field(default=20, ge=1)
    probe_train_size: int | None = Field(default=None, ge=10)
    jacobian: bool = False
    jacobian_batch: int = Field(default=128, ge=1)


class AdversarialConfig(StrictModel):
    """Fig. 1c: a linear softmax classifier against an encoder that tries to make its output uniform."""

    warmup: int = Field(default=1000, ge=0)
    classifier_steps: int = Field(default=10, ge=1)
    classifier_lr: float = Field(default=1e-3, gt=0)
    encoder_lr: float = Field(default=1e-5, gt=0)


class TrialConfig(StrictModel):
    data: dict | str
    encoder: dict | str
    critic: dict | str | None = None
    estimator: dict | str | None = None
    train: TrainConfig
    eval: EvalConfig
    adversarial: AdversarialConfig | None = None
    seed: int = Field(default=0, ge=0)
    device: str = "cpu"
    init: Literal[INITS] = "torch"
    # Modules that register components of their own (mimax.trainables.plugins), imported before the
    # component sections are looked up, by the driver and by every Ray worker.
    plugins: list[Annotated[str, Field(pattern=rf"^{MODULE_NAME}$")]] = []

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        if value not in ("cpu", "cuda", "auto") and not value.startswith("cuda:"):
            raise ValueError(f"expected cpu, cuda, cuda:N or auto, got {value!r}")
        return value

    def to_dict(self) -> dict[str, Any]:
        out = self.model_dump(mode="json")
        for (section, key), default in LATER_DEFAULTS.items():
            node = out if section is None else out[section]
            if node[key] == default:
                del node[key]
        return out


# The top-level sections a search space may set (``seed`` is set per replicate).
SECTIONS = tuple(k for k in TrialConfig.model_fields if k != "seed")
# Component families, each with a registry in ``trainables``; the probe's section is ``eval.probe``.
FAMILIES = ("data", "encoder", "critic", "estimator", "probe")
# The families whose section is a top-level key of the config (analysis names them by their ``name``).
SECTION_FAMILIES = tuple(f for f in FAMILIES if f in SECTIONS)


# ---- what a trial reports -------------------------------------------------------------------------

@dataclass(frozen=True)
class Metric:
    """A key a trial reports: in each evaluation record, or (``params.*``) once, with its parameter counts.
    ``mode``: the one training mode that reports it (None: every mode); ``needs``: the evaluation switch it
    needs too, "probe" (eval.probe not 'none') or "jacobian" (eval.jacobian true)."""

    name: str  # a regular expression when ``shown`` (how messages write it) is given
    mode: str | None = None
    needs: str | None = None
    shown: str | None = None

    def matches(self, key: str) -> bool:
        return re.fullmatch(self.name, key) is not None if self.shown else key == self.name

    def missing(self, config: TrialConfig) -> str | None:
        """What ``config`` lacks for a trial of it to report this metric; None when it reports it."""
        if self.mode is not None and config.train.mode != self.mode:
            return f"train.mode {self.mode}"
        if self.needs == "probe" and config.eval.probe == "none":
            return "a probe, but eval.probe is 'none'"
        if self.needs == "jacobian" and not config.eval.jacobian:
            return "eval.jacobian true"
        return None


METRICS = (
    Metric("probe_accuracy", needs="probe"),
    # One per probe once eval.probe may be a list; probe_accuracy stays the first probe's.
    Metric(rf"probe_accuracy\.{PROBE_LABEL}", needs="probe", shown="probe_accuracy.LABEL"),
    Metric("bound_train", mode="infomax"),
    Metric("bound_test", mode="infomax"),
    Metric("loss"),
    Metric("classifier_accuracy", mode="adversarial"),
    Metric("wall_s"),
    Metric("params.g1"),
    Metric("params.g2", mode="infomax"),
    Metric("params.critic", mode="infomax"),
    Metric("params.estimator", mode="infomax"),  # only an estimator with parameters (MINE, TUBA) has it
    Metric("params.classifier", mode="adversarial"),
    Metric(r"log_cond_p\d+(\.\d+)?", needs="jacobian", shown="log_cond_pQ"),  # the Jacobian's percentiles
)


def metric(key: str) -> Metric | None:
    """The metric a key names, or None."""
    return next((m for m in METRICS if m.matches(key)), None)


def mode_metrics(mode: str) -> tuple[str, ...]:
    """The evaluation metrics (by name; patterns and parameter counts left out) only ``mode`` reports."""
    return tuple(m.name for m in METRICS if m.mode == mode and not m.shown and not m.name.startswith("params."))


# Evaluation-record floats with a database column of their own (mimax_evaluations); the whole record is
# stored beside them as JSON.
EVAL_FLOATS = ("bound_train", "bound_test", "probe_accuracy", "loss", "wall_s")
# The metrics a pack's result carries at top level as its members' mean (what a scheduler compares).
MEAN_KEYS = ("bound_train", "bound_test", "probe_accuracy", "loss", "classifier_accuracy")
# What a trial reports once, beside its parameter counts, and the study stores with the trial (nats).
TRIAL_FLOATS = ("ceiling", "true_mi")
# The percentiles of the Jacobian's log condition number an evaluation records (log_cond_p<q>, eval.jacobian).
LOG_COND_PERCENTILES = (5, 25, 50, 75, 95)
LOG_COND = tuple(f"log_cond_p{q}" for q in LOG_COND_PERCENTILES)
LOG_K_ESTIMATORS = ("nce", "kpair")  # bounded by log K, K = train.batch_size


def ceiling(config: dict) -> float | None:
    """The largest value a trial of ``config`` can report (nats) as the estimators define it: log K for
    NCE and K-pair, log 2 for the soft triplet (InfoNCE with K = 2), None for an unbounded estimator.
    Migration 0003 backfills stored trials with it; analysis uses it for a database from before then."""
    estimator = config.get("estimator")
    estimator = estimator.get("name") if isinstance(estimator, dict) else estimator
    if estimator in LOG_K_ESTIMATORS:
        train = config.get("train") if isinstance(config.get("train"), dict) else {}
        return math.log(train.get("batch_size", TrainConfig.model_fields["batch_size"].default))
    return math.log(2) if estimator == "triplet" else None


def ceiling_label(value: float, batch_size: int | None, digits: int = 3, unit: str = "") -> str:
    """A ceiling named by the formula that gives it: ``log K = 4.852 (K = 128)`` when it is the log of the
    batch size K, ``log 2 = 0.693``, else its value alone: a plugin's ceiling follows its own formula,
    which mimax does not know (and K is the batch size, never worked backwards from the value)."""
    shown = f"{value:.{digits}f}{' ' + unit if unit else ''}"
    if batch_size and math.isclose(value, math.log(batch_size), rel_tol=0, abs_tol=1e-9):
        return f"log K = {shown} (K = {batch_size})"
    if math.isclose(value, math.log(2), rel_tol=0, abs_tol=1e-9):
        return f"log 2 = {shown}"
    return shown


# ---- records between the Ray adapter and the study ------------------------------------------------

class EvalRecord(TypedDict, total=False):
    """One evaluation of one replicate, as the study stores it; beside these keys ``log_cond_p*`` (with
    eval.jacobian) and ``probe_accuracy.<label>`` (one per probe)."""

    event: Literal["eval", "diverged"]
    step: int
    bound_train: float | None
    bound_test: float | None
    probe_accuracy: float | None
    loss: float | None
    wall_s: float
    classifier_accuracy: float  # adversarial mode
    reason: str  # why a replicate diverged
    pack_size: int  # added by the study, as the two below
    replayed: bool  # re-reported from a checkpoint


class Member(TypedDict):
    trial_key: str
    seed: int
    ended: NotRequired[bool]  # its outcome is stored already: it rides along in a resumed pack


class PackConfig(TypedDict):
    """A Ray trial's config: one configuration trained for one or more seeds (its members)."""

    pack_key: str
    trial: dict  # the trial config without ``seed``
    members: list[Member]
    resume_from: str | None  # a checkpoint directory to continue from


class PackItem(PackConfig):
    """A pack in the searcher's queue: its configuration's Optuna trial number, and once it did not fit
    its device, the pack size to run its members in."""

    number: int
    split: NotRequired[int]


class PackResult(TypedDict, total=False):
    """One ``tune.report`` of a pack; beside these keys ``params.<module>`` (parameter counts) and the
    members' mean of each of ``MEAN_KEYS``."""

    step: int
    event: Literal["eval", "diverged"]
    records: dict[str, EvalRecord]  # trial_key -> its new record (Ray may flatten it to records/KEY/x)
    replayed: bool
    pack_size: int
    pack_split: int  # the pack trained nothing: run its members in packs of this size
    node_id: str
    node_ip: str
    device: str
    ceiling: float | None  # TRIAL_FLOATS
    true_mi: float | None


def json_safe(obj: Any, default=None) -> Any:
    """``obj`` as strict JSON data: NaN and ±inf become null (strict JSON has neither); ``default`` as for
    ``json.dumps``, for what JSON cannot say."""
    return json.loads(json.dumps(obj, default=default), parse_constant=lambda _: None)


# ---- files ----------------------------------------------------------------------------------------

# The files a user writes by hand (a trial config, a space, claims): 1 MiB is ~70 times the paper's claims
# file, and PyYAML (pure Python) reads it in about a second.
MAX_FILE_BYTES = 2**20
MAX_DEPTH = 50  # nesting levels of one YAML document (configs use fewer than 10); deeper recurses out
MAX_VALUES = 100_000  # values of one document with its aliases expanded (`&a [*a, *a]` doubles a level)
NESTED = f"is nested too deeply (more than {MAX_DEPTH} levels)"
# Byte order marks YAML allows, longest first (UTF-32 LE's begins with UTF-16 LE's).
_BOMS = ((codecs.BOM_UTF32_LE, "UTF-32-LE"), (codecs.BOM_UTF32_BE, "UTF-32-BE"), (codecs.BOM_UTF8, "UTF-8"),
         (codecs.BOM_UTF16_LE, "UTF-16-LE"), (codecs.BOM_UTF16_BE, "UTF-16-BE"))


class _UniqueKeyLoader(yaml.SafeLoader):
    """A safe loader that rejects duplicate keys (plain PyYAML keeps the last one silently) and documents
    nested deeper than MAX_DEPTH (PyYAML composes recursively: 100,000 ``[`` end in a RecursionError).
    Merge keys (``<<: *anchor``) work: the keys written beside one override the merged ones."""

    depth = 0

    def compose_node(self, parent, index):
        if self.depth >= MAX_DEPTH:
            raise ConfigError("", f"{NESTED} at line {self.peek_event().start_mark.line + 1}")
        self.depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False):
    seen = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node, deep=deep)
        if isinstance(key, str):  # an unhashable key is left to construct_mapping, which refuses it
            if key in seen:
                raise ConfigError("", f"line {key_node.start_mark.line + 1}: duplicate key {key!r}")
            seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
# YAML 1.2's floats: PyYAML (YAML 1.1) reads ``lr: 1e-3`` as the text "1e-3", which the strict configs refuse.
_UniqueKeyLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."))


def yaml_value(text: str) -> Any:
    """One YAML document from text, read as config files are (YAML 1.2 floats, unique keys); every problem
    is a ConfigError whose message follows the name of what was read ("is not valid YAML: ...")."""
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except ConfigError:  # a duplicate key, too deep (ConfigError is a ValueError: before the last clause)
        raise
    except yaml.reader.ReaderError as exc:  # a character YAML does not allow (NUL, most controls)
        line = text.count("\n", 0, exc.position) + 1
        column = exc.position - (text.rfind("\n", 0, exc.position) + 1) + 1
        raise ConfigError("", f"holds the character U+{exc.character:04X} at line {line}, column {column}, "
                              "which YAML does not allow") from None
    except yaml.MarkedYAMLError as exc:  # the problem and where it is, not the context's first line
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError("", f"is not valid YAML: {exc.problem or exc.context}{where}") from None
    except yaml.YAMLError as exc:
        raise ConfigError("", f"is not valid YAML: {str(exc).splitlines()[0]}") from None
    except RecursionError:  # not through compose_node's guard (a deep key, say)
        raise ConfigError("", NESTED) from None
    except (ValueError, OverflowError) as exc:  # a value Python cannot make: !!int 0x, 2020-13-45
        raise ConfigError("", f"is not valid YAML: {exc}") from None
    _check_shape(data)
    return data


def _check_shape(data: Any) -> None:
    """Refuse a document deeper than MAX_DEPTH or larger than MAX_VALUES once aliases are expanded: what
    reads it later (pydantic, json, deepcopy) recurses, and expands every alias."""
    stack, count = [(data, 1)], 0
    while stack:
        node, depth = stack.pop()
        count += 1
        if depth > MAX_DEPTH:
            raise ConfigError("", NESTED)
        if count > MAX_VALUES:
            raise ConfigError("", f"holds more than {MAX_VALUES:,} values with its aliases expanded")
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for kv in node.items() for v in kv)
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node)


def decode_text(data: bytes) -> str:
    """A file's bytes as text: UTF-8, or what its byte order mark says; a ConfigError naming the encoding
    and the byte offset of the first byte that is not text in it."""
    bom, encoding = next(((b, e) for b, e in _BOMS if data.startswith(b)), (b"", "UTF-8"))
    try:
        return data[len(bom):].decode(encoding)
    except UnicodeDecodeError as exc:
        at = len(bom) + exc.start
        line = data.count(b"\n", 0, at) + 1
        how = " (by its byte order mark)" if bom else ""
        raise ConfigError("", f"is not {encoding} text{how}: byte 0x{data[at]:02x} at offset {at} (line {line}): "
                              f"{exc.reason}; save it as UTF-8") from None


def read_bytes(path: str, kind: str, limit: int = MAX_FILE_BYTES) -> bytes:
    """At most ``limit`` bytes of a ``kind`` file; a missing, unreadable or larger file is a ConfigError."""
    try:
        with open(path, "rb") as fh:
            data = fh.read(limit + 1)
    except FileNotFoundError:
        raise ConfigError("", f"{kind} file not found: {path}") from None
    except IsADirectoryError:
        raise ConfigError("", f"expected a {kind} file, got a directory: {path}") from None
    except (OSError, ValueError) as exc:  # permission, a name too long, a NUL in the name
        raise ConfigError("", f"cannot read {kind} file {path}: {getattr(exc, 'strerror', None) or exc}") from None
    if len(data) > limit:
        raise ConfigError("", f"{kind} file {path} is larger than {limit:,} bytes; a {kind} file is written by hand")
    return data


def load_yaml(path: str, kind: str) -> Any:
    """A YAML file (a ``kind`` file: "config", "space") as data; every problem one ConfigError line."""
    data = read_bytes(path, kind)
    try:
        return yaml_value(decode_text(data))
    except ConfigError as exc:
        raise ConfigError("", f"{path} {exc.message}") from None
