"""The claims file: a YAML list of claims about studies, validated by pydantic models (unknown keys are
errors). The format and the verdicts' semantics are in docs/VERIFY.md.

Every error is one line that names the file, the claim and the key:
``claims.yaml: claim fig3-nwj-order: order.op: expected one of >, >=, <, <=, ~, got '=>'``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from mimax.contract import load_yaml
from mimax.errors import ConfigError, from_validation_error
from mimax.search_spaces.spec import show

__all__ = ["SHIPPED", "Bound", "Claim", "ClaimsFile", "Correlation", "Diverged", "Order", "Versus", "claim_error",
           "load_claims", "shipped_names"]

SHIPPED = Path(__file__).parent  # claims files that ship with mimax: <name>.yaml, usable by name
OPS = {">": ">", ">=": ">=", "<": "<", "<=": "<=", "~": "~", "≥": ">=", "≤": "<=", "≈": "~"}
TESTS = ("order", "bound", "versus", "correlation")
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]*")
Number = Annotated[float, Field(strict=True)]  # a YAML number: not true, not the text '1e-4'


def shipped_names() -> list[str]:
    return sorted(p.stem for p in SHIPPED.glob("*.yaml"))


def claim_error(source: str, claim: str, key: str, message: str) -> ConfigError:
    """``<source>: claim <id>: <key>: <message>``."""
    return ConfigError(source, f"claim {claim}: {key}: {message}")


def _scalar(value: Any) -> Any:
    if isinstance(value, (str, int, float, bool)):
        return value
    raise ValueError(f"expected one value (text, number or true/false), got {show(value)}")


def _at(value: Any) -> str | int:
    """``final``, ``every`` or ``{step: N}`` as "final", "every" or the int N."""
    if value in ("final", "every"):
        return value
    if isinstance(value, dict) and set(value) == {"step"}:
        step = value["step"]
        if isinstance(step, int) and not isinstance(step, bool) and step >= 0:
            return step
        raise ValueError(f"step: expected a whole number ≥ 0, got {show(step)}")
    raise ValueError(f"expected final, every or {{step: N}}, got {show(value)}")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class _Comparison(_Strict):
    """An operator with its margin (``>=``, ``<=``) or tolerance (``~``)."""

    op: str
    margin: Number | None = Field(None, ge=0)
    by: Number | None = Field(None, gt=0)
    tol: Number | None = Field(None, gt=0)

    @field_validator("op", mode="before")
    @classmethod
    def _op(cls, value: Any) -> str:
        if not isinstance(value, str) or value not in OPS:  # a list or a mapping cannot be looked up
            raise ValueError(f"expected one of >, >=, <, <=, ~ (or ≥, ≤, ≈), got {show(value)}")
        return OPS[value]

    def slack(self) -> str:
        """The margin, lead or tolerance as the test reads it: ``a ≥ b − margin``, ``a ≤ b + margin``,
        ``a > b + by``, ``a < b − by``, ``a ≈ b ± tol``."""
        if self.op in (">=", "<="):
            return f" {'−' if self.op == '>=' else '+'} {self.margin:g}"
        if self.by is not None:
            return f" {'+' if self.op == '>' else '−'} {self.by:g}"
        return f" ± {self.tol:g}" if self.op == "~" else ""

    def check(self) -> tuple[str, str] | None:
        """(key, message) when the margin, lead or tolerance does not fit the operator."""
        if self.op in (">=", "<=") and self.margin is None:
            return "margin", f"required with op '{self.op}' (a ≥ b − margin, a ≤ b + margin)"
        if self.op not in (">=", "<=") and self.margin is not None:
            return "margin", (f"only with op '>=' or '<=', not '{self.op}' (a lead that a must have over b: "
                              f"op '>' with by)")
        if self.op not in (">", "<") and self.by is not None:
            return "by", f"only with op '>' or '<' (a > b + by, a < b − by), not '{self.op}'"
        if self.op == "~" and self.tol is None:
            return "tol", "required with op '~' (|a − b| ≤ tol)"
        if self.op != "~" and self.tol is not None:
            return "tol", f"only with op '~', not '{self.op}'"
        return None


class Order(_Comparison):
    """``a op b`` between two levels of ``factor``: mean(factor = a) − mean(factor = b)."""

    factor: str
    a: Any
    b: Any

    @field_validator("a", "b")
    @classmethod
    def levels(cls, value: Any) -> Any:
        return _scalar(value)


class _StudyRef(_Strict):
    study: str | None = None
    preset: str | None = None
    budget: str | None = None


class _Selection(_Strict):
    """Which trials (``where``: config key -> value or values) and which evaluation (``at``)."""

    at: Any = None
    where: dict[str, Any] = Field(default_factory=dict)

    @field_validator("at")
    @classmethod
    def evaluation(cls, value: Any) -> Any:
        return None if value is None else _at(value)

    @field_validator("where", mode="before")
    @classmethod
    def selection(cls, value: Any) -> Any:
        return _where(value)


class Versus(_Comparison, _StudyRef, _Selection):
    """``metric op value``, or ``metric op`` the same metric (or ``metric``) of a reference: another
    study (``study`` / ``preset``, with its own ``where`` and ``at``), or the same trials at another
    evaluation (``at`` alone: a paired comparison)."""

    value: Number | None = None
    metric: str | None = None

    @property
    def paired(self) -> bool:
        """The same trials at another evaluation (no value, no reference study)."""
        return self.value is None and self.study is None and self.preset is None


class Bound(_Strict):
    """Every selected evaluation ≤ ``at_most`` (a number, or ``ceiling``: the trial's ceiling) or
    ≥ ``at_least``, up to ``tol``."""

    at_most: Any = None
    at_least: Number | None = None
    tol: Number = Field(0.0, ge=0)

    @field_validator("at_most")
    @classmethod
    def limit(cls, value: Any) -> Any:
        if value is None or value == "ceiling" or (isinstance(value, (int, float)) and not isinstance(value, bool)):
            return value
        raise ValueError(f"expected a number or ceiling, got {show(value)}")


class Correlation(_Strict):
    """The sign of Spearman's ρ between the claim's metric and ``with`` within each stratum."""

    with_: str = Field(alias="with")
    sign: Literal["positive", "negative"]


def _where(value: Any) -> dict[str, list]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"expected a mapping of config keys to values, got {show(value)}")
    out = {}
    for key, levels in value.items():
        levels = levels if isinstance(levels, list) else [levels]
        if not levels:
            raise ValueError(f"{key}: expected a value or a non-empty list of values")
        try:
            out[str(key)] = [_scalar(v) for v in levels]
        except ValueError as e:
            raise ValueError(f"{key}: {e}") from None
    return out


class Claim(_StudyRef, _Selection):
    """One claim; ``at`` is final (default), {step: N}, or every (bound tests only, their default)."""

    id: str
    finding: str
    paper: str | None = None
    metric: str
    minus: str | None = None  # a second metric of the same evaluation, subtracted per trial
    per: list[str] = Field(default_factory=list)
    family: str | None = Field(None, min_length=1)  # default: the finding (with the probe, off the primary one)
    endpoint: Any = None  # paper (the default for a preset), study, or {step: N}
    pool: Literal["selection", "none"] = "selection"
    pair: Literal["seed"] | None = None
    exempt: str | None = Field(None, min_length=1)
    order: Order | None = None
    bound: Bound | None = None
    versus: Versus | None = None
    correlation: Correlation | None = None

    @field_validator("id")
    @classmethod
    def valid_id(cls, value: str) -> str:
        if not _ID.fullmatch(value):
            raise ValueError(f"expected letters, digits and . _ : - (not starting with a sign), got {show(value)}")
        return value

    @field_validator("per", mode="before")
    @classmethod
    def strata(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("endpoint")
    @classmethod
    def training_point(cls, value: Any) -> Any:
        if value is None or value in ("paper", "study"):
            return value
        if isinstance(value, dict) and set(value) == {"step"}:
            return _at(value)
        raise ValueError(f"expected paper, study or {{step: N}}, got {show(value)}")

    @property
    def test(self) -> str:
        return next(t for t in TESTS if getattr(self, t) is not None)

    @property
    def kind(self) -> str:
        """"check" for a bound (a census of every evaluation: true by construction when the code is
        right, so a failure is a bug report), "finding" for a statement that could come out otherwise."""
        return "check" if self.bound is not None else "finding"

    @property
    def when(self) -> str | int:
        """The evaluation the claim reads: its ``at``, by default ``every`` for a bound, else ``final``."""
        return self.at if self.at is not None else ("every" if self.bound is not None else "final")


class Diverged(_Strict):
    """A trial whose ``metric`` at its last evaluation is non-finite or below ``below`` is excluded from
    every claim (and counted), as is a trial that stopped diverged."""

    metric: str
    below: Number


class ClaimsFile(_Strict):
    alpha: Number = Field(0.05, gt=0, lt=1)
    # The budgets of the claims that name a preset, in order of preference: the first whose study is in
    # the database is read (one name, or a list).
    budget: list[str] | None = None
    primary_probe: str | None = None  # its accuracy claims (and those of no probe) form each finding's family
    diverged: Diverged | None = None
    description: str | None = None
    claims: list[Claim] = Field(min_length=1)

    @field_validator("budget", mode="before")
    @classmethod
    def budgets(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


# ---- loading --------------------------------------------------------------------------------------


def _check(claim: Claim) -> tuple[str, str] | None:
    """Cross-key rules pydantic's field types do not say, as (key, message)."""
    tests = [t for t in TESTS if getattr(claim, t) is not None]
    if len(tests) != 1:
        return "test", (f"give exactly one of {', '.join(TESTS)}"
                        + (f", not {' and '.join(tests)}" if tests else ""))
    if claim.study is not None and (claim.preset is not None or claim.budget is not None):
        return "study", "give either study or preset (with budget), not both"
    if claim.study is None and claim.preset is None:
        return "study", "missing: give study: NAME, or preset: P with budget: B"
    if claim.when == "every" and claim.bound is None:
        return "at", "every is for bound tests; a comparison reads one evaluation per trial (final or {step: N})"
    if claim.per and claim.bound is not None:
        return "per", "a bound test checks every selected evaluation; it has no strata"
    if claim.bound is not None and claim.endpoint is not None:
        return "endpoint", "a bound test (a check) reads every evaluation; it has no endpoint"
    if claim.pair is not None and claim.order is None:
        return "pair", "pairing by seed compares configurations of one study: only with an order test"
    if claim.pair is not None and claim.pool == "none":
        return "pair", "pairing by seed needs the pooled model (pool: selection)"
    if claim.endpoint is not None and claim.at not in (None, "final"):
        return "endpoint", f"the claim reads step {claim.at}, which is its endpoint; give one of at and endpoint"
    if claim.minus is not None and claim.minus == claim.metric:
        return "minus", "the same metric as metric: the difference is 0"
    test = getattr(claim, claim.test)
    if isinstance(test, (Order, Versus)) and (bad := test.check()):
        return f"{claim.test}.{bad[0]}", bad[1]
    if claim.order is not None and claim.order.a == claim.order.b:
        return "order.b", f"the same level as order.a ({show(claim.order.a)})"
    if claim.bound is not None and (claim.bound.at_most is None) == (claim.bound.at_least is None):
        return "bound", "give exactly one of at_most, at_least"
    return _check_versus(claim.versus) if claim.versus is not None else None


def _check_versus(v: Versus) -> tuple[str, str] | None:
    other = v.study is not None or v.preset is not None
    if v.value is not None and (other or v.at is not None or v.metric is not None or v.where):
        return "versus.value", "a constant takes no study, preset, at, metric or where"
    if v.study is not None and (v.preset is not None or v.budget is not None):
        return "versus.study", "give either study or preset (with budget), not both"
    if v.value is None and not other and v.at is None:
        return "versus", "give value, a reference study (study or preset), or at (the same trials at another evaluation)"
    if not other and v.where:
        return "versus.where", "only with a reference study; the same trials are compared at another evaluation"
    if v.at == "every":
        return "versus.at", "every is for bound tests; give final or {step: N}"
    return None


def resolve_path(name_or_path: str) -> tuple[Path, str]:
    """The claims file and the name to show in errors: a path as given, else a shipped file by name."""
    path = Path(name_or_path)
    if path.is_file():
        return path, name_or_path
    if path.is_dir():
        raise ConfigError(name_or_path, "expected a claims file, got a directory")
    if name_or_path in shipped_names():
        return SHIPPED / f"{name_or_path}.yaml", name_or_path
    hint = "" if name_or_path.endswith((".yaml", ".yml")) or os.sep in name_or_path else \
        f" and no shipped claims file of that name (shipped: {', '.join(shipped_names())})"
    raise ConfigError(name_or_path, f"no such claims file{hint}")


def load_claims(name_or_path: str) -> tuple[ClaimsFile, str]:
    """Parse and validate a claims file (a path, or a shipped name such as ``paper``); returns it and the
    name its errors use. Raises ConfigError."""
    path, source = resolve_path(name_or_path)
    try:
        raw = load_yaml(str(path), "claims")
    except ConfigError as e:  # "<path> is not valid YAML: ...", "<path> line 3: duplicate key 'id'"
        raise ConfigError(source, e.message.removeprefix(str(path)).strip()) from None
    if not isinstance(raw, dict):
        raise ConfigError(source, f"expected a mapping with a claims list, got {show(raw)}")
    try:
        parsed = ClaimsFile.model_validate(raw)
    except ValidationError as e:
        raise _located(e, raw, source) from None
    seen: set[str] = set()
    for claim in parsed.claims:
        if claim.id in seen:
            raise claim_error(source, claim.id, "id", "duplicate id (ids name claims in the output)")
        seen.add(claim.id)
        if (bad := _check(claim)) is not None:
            raise claim_error(source, claim.id, *bad)
    return parsed, source


def _located(exc: ValidationError, raw: dict, source: str) -> ConfigError:
    """The first validation error as ``<source>: claim <id>: <key>: <message>``."""
    err = from_validation_error(exc, unknown_first=True)
    parts = err.path.split(".") if err.path else []
    if len(parts) >= 2 and parts[0] == "claims" and parts[1].isdigit():
        i = int(parts[1])
        item = raw["claims"][i] if isinstance(raw.get("claims"), list) and i < len(raw["claims"]) else None
        label = item.get("id") if isinstance(item, dict) and isinstance(item.get("id"), str) else f"#{i + 1}"
        key = ".".join(parts[2:]) or "claim"
        if key == "claim" and not isinstance(item, dict):
            return claim_error(source, label, key, f"expected a mapping, got {show(item)}")
        return claim_error(source, label, key, err.message)
    return ConfigError(source, f"{err.path or 'file'}: {err.message}")
