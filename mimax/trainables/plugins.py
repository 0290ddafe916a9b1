"""Components from outside mimax: the registries of the built-in ones, opened to a user's own modules.

- ``register("critic")`` (a decorator, or ``register("critic", MyCritic)``) adds a class to its family's
  registry; the class subclasses the family's base (``Encoder``, ``Critic``, ``Estimator``, ``Views``,
  ``Probe``) and declares ``name`` and ``Params`` as the built-in ones do.
- A trial config or space names the modules that register components with ``plugins: [pkg.mod, ...]``;
  ``config.resolve`` imports them before it looks anything up, in the driver and in every Ray worker,
  on any node, since the list travels inside the trial config.
- An installed package may instead declare entry points in the group ``mimax.components``
  (``name = "pkg.mod"`` or ``name = "pkg.mod:Class"``): they are loaded on the first look-up of a process.

Each problem is one ConfigError line: a module that does not import, a class that lacks a method its
family needs, a name taken by a built-in or by another class, and (``try_out``, at validation) a
component whose forward gives the wrong shape on a tiny input.
"""

from __future__ import annotations

import functools
import importlib
import re
import sys
from importlib.metadata import entry_points
from typing import Any, Callable

import torch

from mimax.contract import MODULE_NAME
from mimax.errors import ConfigError
from mimax.trainables.base import Params, ViewSpec
from mimax.trainables.critics import CRITICS, Critic
from mimax.trainables.data import DATASETS, Views
from mimax.trainables.encoders import ENCODERS, Encoder
from mimax.trainables.estimators import ESTIMATORS, Estimate, Estimator
from mimax.trainables.probes import PROBES, Probe

ENTRY_POINT_GROUP = "mimax.components"

# family -> (registry, base class, methods a subclass must define itself)
FAMILIES: dict[str, tuple[dict[str, type], type, tuple[str, ...]]] = {
    "data": (DATASETS, Views, ("spec_for", "train_batch", "eval_batches")),
    "encoder": (ENCODERS, Encoder, ("forward",)),
    "critic": (CRITICS, Critic, ("forward",)),
    "estimator": (ESTIMATORS, Estimator, ("forward",)),
    "probe": (PROBES, Probe, ("fit_score",)),
}
BUILTIN = {family: dict(reg) for family, (reg, _, _) in FAMILIES.items()}  # as shipped
# What each module's import registered (module -> [(family, class)]): a module imports once per process, so
# after ``reset`` its registrations are made again from here when a config names it.
_MADE: dict[str, list[tuple[str, type]]] = {}
_RECORDING: list[list[tuple[str, type]]] = []  # one list per import under way


def _where(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def register(family: str, cls: type | None = None) -> Callable[[type], type] | type:
    """Add ``cls`` to ``family``'s registry under ``cls.name``; as ``@register(family)`` a decorator."""
    if family not in FAMILIES:
        raise ConfigError("plugins", f"unknown component family {family!r} (choose from {', '.join(FAMILIES)})")
    if cls is None:
        return functools.partial(register, family)
    registry, base, needed = FAMILIES[family]
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise ConfigError("plugins", f"{family} {cls!r} must subclass {_where(base)}")
    name = cls.__dict__.get("name")
    if not isinstance(name, str) or not name:
        raise ConfigError("plugins", f"{family} {_where(cls)} declares no name (set the class attribute name)")
    if not (isinstance(cls.Params, type) and issubclass(cls.Params, Params)):
        raise ConfigError("plugins", f"{family} {_where(cls)}: Params must subclass {_where(Params)}")
    if family == "data" and cls.labelled:
        needed = (*needed, "probe_data")
    lacking = [m for m in needed if getattr(cls, m, None) is getattr(base, m, None)]
    if lacking:
        raise ConfigError("plugins", f"{family} {name!r} ({_where(cls)}) lacks the method {', '.join(lacking)}")
    if name in BUILTIN[family]:
        raise ConfigError("plugins", f"{family} {name!r} ({_where(cls)}) clashes with the built-in {family} "
                                     f"{name!r}; give it another name")
    known = registry.get(name)
    if known is not None and _where(known) != _where(cls):  # the same class imported again is no clash
        raise ConfigError("plugins", f"{family} {name!r} ({_where(cls)}) clashes with {_where(known)}, "
                                     "registered under that name already")
    registry[name] = cls
    for made in _RECORDING:
        made.append((family, cls))
    return cls


def reset() -> None:
    """The registries as a fresh process has them: the built-ins alone. A Ray worker calls this before each
    trial, so that no trial sees another's plugins; the next ``resolve`` registers the entry points and the
    config's own plugins again."""
    for family, (registry, _, _) in FAMILIES.items():
        registry.clear()
        registry.update(BUILTIN[family])
    load_entry_points.cache_clear()


def family_of(cls: type) -> str:
    for family, (_, base, _) in FAMILIES.items():
        if isinstance(cls, type) and issubclass(cls, base):
            return family
    raise ConfigError("plugins", f"{cls!r} is no mimax component (subclass one of "
                                 f"{', '.join(_where(b) for _, b, _ in FAMILIES.values())})")


def import_plugins(modules: Any, path: str = "plugins") -> None:
    """Import each module of a config's ``plugins`` list (their ``register`` calls run on import)."""
    if not isinstance(modules, list):
        raise ConfigError(path, f"expected a list of module names, got {modules!r}")
    for i, module in enumerate(modules):
        where = f"{path}[{i}]"
        if not isinstance(module, str) or not re.fullmatch(MODULE_NAME, module):
            raise ConfigError(where, f"expected a dotted module name, got {module!r}")
        _import(module, where)


def _import(ref: str, where: str) -> Any:
    """``pkg.mod`` or ``pkg.mod:attr``; any failure is one line naming ``ref``."""
    module, _, attr = ref.partition(":")
    try:
        if module in sys.modules and module in _MADE:  # imported before: its registrations again
            for family, cls in _MADE[module]:
                register(family, cls)
            obj = sys.modules[module]
        else:
            _RECORDING.append([])
            try:
                obj = importlib.import_module(module)
            finally:
                made = _RECORDING.pop()
            _MADE[module] = made
        for part in filter(None, attr.split(".")):
            obj = getattr(obj, part)
        return obj
    except ConfigError as exc:  # a register() call of the module refused a class
        raise ConfigError(where, f"{ref}: {exc.message}") from None
    except Exception as exc:  # noqa: BLE001 - whatever a user's module raises, one line naming it
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise ConfigError(where, f"cannot import {ref!r}: {type(exc).__name__}{': ' + first if first else ''}") from None


@functools.cache
def load_entry_points() -> None:
    """Register what installed packages declare in the ``mimax.components`` group (once per process)."""
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        where = f"entry point {ep.name!r} of group {ENTRY_POINT_GROUP}"
        obj = _import(ep.value, where)
        if isinstance(obj, type):
            family = family_of(obj)
            if FAMILIES[family][0].get(getattr(obj, "name", None)) is not obj:
                try:
                    register(family, obj)
                except ConfigError as exc:
                    raise ConfigError(where, exc.message) from None


def is_plugin(family: str, cls: type) -> bool:
    return BUILTIN[family].get(getattr(cls, "name", None)) is not cls


# ---- a tiny forward of each plugin component, at validation ---------------------------------------

def check_view(data_cls: type, view: Any) -> None:
    """What a dataset's ``spec_for`` gave, checked before an encoder reads it."""
    if not isinstance(view, ViewSpec):
        raise ConfigError("data.name", f"{_where(data_cls)}.spec_for returned {view!r}, not a ViewSpec")


def try_out(encoder: tuple[type, Params], critic: tuple[type, Params] | None,
            estimator: tuple[type, Params] | None, view: ViewSpec) -> None:
    """Run each plugin component once on a tiny input and check what it returns (built-ins are tested)."""
    enc_cls, enc_params = encoder
    out_dim = enc_cls.output_dim(enc_params, view)
    if is_plugin("encoder", enc_cls):
        _checked(_encoder, enc_cls, enc_params, view)
    if critic is not None and is_plugin("critic", critic[0]):
        _checked(_critic, *critic, out_dim)
    if estimator is not None and is_plugin("estimator", estimator[0]):
        _checked(_estimator, *estimator)


_DONE: set = set()  # (check, class, params, dims) tried out already in this process


def _checked(check: Callable, cls: type, params: Params, *dims: Any) -> None:
    key = (check, cls, params.model_dump_json(), dims)
    if key in _DONE:
        return
    gen = torch.Generator().manual_seed(0)
    family = check.__name__.lstrip("_")
    try:
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            torch.manual_seed(0)
            check(cls, params, *dims, gen=gen)
    except ConfigError:
        raise
    except Exception as exc:  # noqa: BLE001 - a user's forward failing on a tiny input: one line naming it
        first = (str(exc).strip().splitlines() or [""])[0]
        raise ConfigError(f"{family}.name", f"plugin {family} {cls.name!r} ({_where(cls)}) raised "
                                            f"{type(exc).__name__} on a tiny input: {first}") from None
    _DONE.add(key)


def _shape(t: Any) -> str:
    return str(tuple(t.shape)) if isinstance(t, torch.Tensor) else type(t).__name__


def _encoder(cls: type, params: Params, view: ViewSpec, gen: torch.Generator) -> None:
    enc = cls(params, view)
    x = torch.randn(3, view.dim, generator=gen)
    out = enc(x)
    want = (3, enc.out_dim)
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != want:
        raise ConfigError("encoder.name", f"plugin encoder {cls.name!r} ({_where(cls)}) returned {_shape(out)} "
                                          f"for a batch of shape {tuple(x.shape)}; expected {want}")


def _critic(cls: type, params: Params, dim: int, gen: torch.Generator) -> None:
    crit = cls(params, dim, dim)
    kv = dim + 2  # unlike the anchors' count and the feature dim, so that no transposition fits by chance
    u, v = torch.randn(3, dim, generator=gen), torch.randn(kv, dim, generator=gen)
    out = crit(u, v)
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (3, kv):
        raise ConfigError("critic.name", f"plugin critic {cls.name!r} ({_where(cls)}) returned {_shape(out)} "
                                         f"for u {tuple(u.shape)} and v {tuple(v.shape)}; expected scores (3, {kv})")


def _estimator(cls: type, params: Params, gen: torch.Generator) -> None:
    est = cls(params)
    out = est(torch.randn(4, 4, generator=gen))
    what = f"plugin estimator {cls.name!r} ({_where(cls)})"
    if not isinstance(out, Estimate):
        raise ConfigError("estimator.name", f"{what} returned {_shape(out)} for scores (4, 4); expected an "
                                            f"{_where(Estimate)}")
    for field in ("value", "objective"):
        got = getattr(out, field)
        if not isinstance(got, torch.Tensor) or got.shape != ():
            raise ConfigError("estimator.name", f"{what} returned an Estimate whose {field} is {_shape(got)} "
                                                "for scores (4, 4); expected a scalar tensor")
