"""The checks of ``mimax.testing`` (see its docstring). Each takes a ``Case``: the class under test and
its parameters; the trained checks run a real ``Trainer`` with the component in its place."""

from __future__ import annotations

import contextlib
import copy
import io
import math
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import torch

from mimax.errors import ConfigError
from mimax.trainables.base import Params, ViewSpec, parse_params
from mimax.trainables.estimators import Estimate, EstimatorParams
from mimax.trainables.loop import Trainer, seeded
from mimax.trainables.plugins import FAMILIES, family_of, register

# Calibration: correlated Gaussians (data.gaussian), DIM coordinates holding MI nats in all.
DIM, MI, K, LR, STEPS = 2, 2.0, 64, 5e-3, 300
# The pack and checkpoint checks train a few steps at a small learning rate, where float rounding of
# batched kernels stays at rounding size instead of being amplified by the training.
SHORT_LR = 1e-4
MODULE_DIM = 8  # feature and view dims of the checks that build modules directly
# nats an estimate may exceed min(true MI, its ceiling) by: the sampling error of 4 batches of 512
# pairs in float64 (the NWJ-type estimators' sd at 2 nats is below 0.1), not a CPU's rounding
CALIBRATION_TOL = 0.3
REL, ABS = 1e-4, 1e-4  # a pack against lone runs (nats): float rounding of batched kernels only
IMAGE_VIEW = ViewSpec(32, (1, 4, 8))  # digits' halves, for encoders that need images


class ConformanceError(AssertionError):
    """A component fails a check; the message names the component, the check and what is wrong."""


class Case:
    def __init__(self, cls: type, params: Mapping[str, Any] | None):
        self.family = family_of(cls)
        self.cls, self.raw = cls, dict(params or {})
        self.name = cls.__dict__.get("name")
        self.label = f"{self.family} {self.name!r} ({cls.__module__}.{cls.__qualname__})"

    @property
    def params(self) -> Params:
        try:
            return parse_params(self.cls, self.raw, self.family)
        except ConfigError as exc:
            self.fail("declares", f"its Params reject {self.raw}: {exc}")

    def fail(self, check: str, message: str):
        raise ConformanceError(f"{self.label} fails {check}: {message}")

    def expect(self, ok: bool, check: str, message: str) -> None:
        if not ok:
            self.fail(check, message)

    def refuses(self, error: type[Exception], check: str, message: str, call: Callable, *args) -> None:
        """``call(*args)`` must raise ``error``."""
        try:
            call(*args)
        except error:
            return
        self.fail(check, message)

    # ---- a trial config with this component in its place
    def flat_ok(self) -> bool:
        try:
            self.cls.check(self.params, ViewSpec(DIM))
            return True
        except ConfigError:
            return False

    def trial(self, steps: int, every: int, seed: int = 0, lr: float = LR) -> dict:
        cfg = {"data": {"name": "gaussian", "dim": DIM, "mi": MI}, "encoder": {"name": "identity"},
               "critic": {"name": "separable", "hidden": 32, "out": 16}, "estimator": {"name": "nce"},
               "train": {"steps": steps, "batch_size": K, "lr": lr},
               "eval": {"every": every, "probe": "none", "bound_batches": 8}, "seed": seed}
        section = {"name": self.name, **self.raw}
        if self.family == "critic" and not self.cls.has_parameters:
            cfg["encoder"] = {"name": "mlp", "hidden": [32], "out_dim": 8}  # something to train
        if self.family == "encoder" and not self.flat_ok():
            cfg["data"], cfg["train"]["batch_size"] = {"name": "digits"}, 64
        cfg[self.family] = section
        return cfg


@contextlib.contextmanager
def _registered(case: Case) -> Iterator[None]:
    """The class in its family's registry while a check runs (added and removed if it was not there)."""
    registry = FAMILIES[case.family][0]
    if registry.get(case.name) is case.cls:
        yield
        return
    try:
        register(case.family, case.cls)
    except ConfigError as exc:
        case.fail("declares", exc.message)
    try:
        yield
    finally:
        registry.pop(case.name, None)


def _grads_finite(case: Case, check: str, tensors: dict[str, torch.Tensor]) -> None:
    for what, t in tensors.items():
        g = t.grad
        case.expect(g is not None, check, f"no gradient reaches {what}")
        case.expect(bool(torch.isfinite(g).all()), check, f"the gradient of {what} is not finite")
        if what in ("the input", "u", "v"):
            case.expect(bool(g.abs().sum() > 0), check, f"the gradient of {what} is zero")


def _randn(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _build(case: Case, seed: int, *args):
    with seeded(seed):
        return case.cls(case.params, *args)


# ------------------------------------------------------------------------------------------ checks

def declares(case: Case) -> None:
    base = FAMILIES[case.family][1]
    case.expect(isinstance(case.name, str) and bool(case.name), "declares", "it sets no class attribute name")
    case.expect(issubclass(case.cls, base), "declares", f"it does not subclass {base.__qualname__}")
    case.params  # noqa: B018 - parses the given parameters, defaults for the rest
    case.refuses(ConfigError, "declares",
                 "its Params accept an unknown key (subclass mimax's Params, which forbids them)",
                 parse_params, case.cls, {**case.raw, "no_such_key": 1}, case.family)
    if case.family == "estimator":
        case.expect(issubclass(case.cls.Params, EstimatorParams), "declares",
                    "its Params do not subclass EstimatorParams (every estimator takes a target)")
    if case.family in ("encoder", "critic", "estimator"):  # the trainer's optimisers go by the flag
        args = {"encoder": lambda: (_encoder_view(case),), "critic": lambda: (MODULE_DIM, MODULE_DIM),
                "estimator": tuple}[case.family]()
        module = _build(case, 0, *args)
        n = sum(p.numel() for p in module.parameters())
        case.expect((n > 0) == case.cls.has_parameters, "declares",
                    f"has_parameters is {case.cls.has_parameters} but it holds {n} parameters")


def _encoder_view(case: Case) -> ViewSpec:
    return ViewSpec(MODULE_DIM) if case.flat_ok() else IMAGE_VIEW


def _critic_dims(case: Case) -> tuple[int, int]:
    """Unequal dims where the critic allows them (a swapped u and v cannot pass), else equal."""
    try:
        case.cls.check(case.params, 5, 7)
        return 5, 7
    except ConfigError:
        return 6, 6


def shapes(case: Case) -> None:
    {"encoder": _encoder_shapes, "critic": _critic_shapes, "estimator": _estimator_shapes,
     "data": _data_shapes}[case.family](case)


def _encoder_shapes(case: Case) -> None:
    view = _encoder_view(case)
    enc = _build(case, 0, view)
    want = case.cls.output_dim(case.params, view)
    x = _randn(5, view.dim, seed=1).requires_grad_(True)
    out = enc(x)
    case.expect(isinstance(out, torch.Tensor) and tuple(out.shape) == (5, want), "shapes",
                f"features of shape {tuple(getattr(out, 'shape', ()))} for a batch (5, {view.dim}); expected (5, {want})")
    case.expect(enc.out_dim == want, "shapes", f"out_dim {enc.out_dim} differs from output_dim {want}")
    case.expect(bool(torch.isfinite(out).all()), "shapes", "features are not finite")
    out.square().sum().backward()
    _grads_finite(case, "shapes", {"the input": x, **dict(enc.named_parameters())})


def _critic_shapes(case: Case) -> None:
    du, dv = _critic_dims(case)
    critic = _build(case, 0, du, dv)
    u, v = _randn(4, du, seed=1).requires_grad_(True), _randn(5, dv, seed=2).requires_grad_(True)
    s = critic(u, v)
    case.expect(isinstance(s, torch.Tensor) and tuple(s.shape) == (4, 5), "shapes",
                f"scores of shape {tuple(getattr(s, 'shape', ()))} for u (4, {du}) and v (5, {dv}); expected (4, 5)")
    case.expect(bool(torch.isfinite(s).all()), "shapes", "scores are not finite")
    (s[:4, :4].diagonal().sum() - s.logsumexp(dim=1).sum()).backward()  # an InfoNCE-like objective
    _grads_finite(case, "shapes", {"u": u, "v": v, **dict(critic.named_parameters())})


def _scores(k: int, seed: int, scale: float = 1.0, shift: float = 1.0) -> torch.Tensor:
    return scale * _randn(k, k, seed=seed) + shift * torch.eye(k)


def _estimator_shapes(case: Case) -> None:
    for k, scale in ((2, 1.0), (16, 3.0)):
        s = _scores(k, seed=k, scale=scale).requires_grad_(True)
        est = case.cls(case.params)(s)
        case.expect(isinstance(est, Estimate), "shapes", f"returned {type(est).__name__}, not an Estimate")
        for field in ("value", "objective"):
            out = getattr(est, field)
            case.expect(isinstance(out, torch.Tensor) and out.shape == () and bool(torch.isfinite(out)), "shapes",
                        f"{field} is {out!r} for scores ({k}, {k}); expected a finite scalar tensor")
            (grad,) = torch.autograd.grad(out, s, retain_graph=True)
            case.expect(bool(torch.isfinite(grad).all()) and grad.abs().sum() > 0, "shapes",
                        f"the gradient of {field} with respect to the scores is not finite or is zero")
    s = _scores(6, seed=3, scale=2.0)
    for target in (None, 2.0):
        est_mod = case.cls(case.cls.Params(**{**case.raw, "target": target}))
        est = est_mod(s)
        want = -est.objective if target is None else (est.value - target).abs()
        case.expect(torch.allclose(est_mod.loss(est), want), "shapes",  # the same float ops: to rounding
                    f"loss is not {'-objective' if target is None else '|value - target|'} (target {target})")
    est_mod = case.cls(case.params)
    for bad in (torch.zeros(1, 1), torch.zeros(3, 4), torch.zeros(4)):
        case.refuses(ValueError, "shapes", f"scores of shape {tuple(bad.shape)} are accepted; a (K, K) batch with "
                     "K >= 2 is needed (raise ValueError)", est_mod, bad)


def _data_shapes(case: Case) -> None:
    data = case.cls(case.params)
    spec = data.spec
    case.expect(isinstance(spec, ViewSpec) and spec == case.cls.spec_for(data.params), "shapes",
                f"spec {spec!r} differs from spec_for(params), which validation reads without loading data")
    if spec.image_shape is not None:
        case.expect(math.prod(spec.image_shape) == spec.dim, "shapes", f"image_shape {spec.image_shape} != dim {spec.dim}")
    gen = lambda seed: torch.Generator().manual_seed(seed)  # noqa: E731
    x1, x2 = data.train_batch(2, gen(1))
    for x in (x1, x2):
        case.expect(tuple(x.shape) == (2, spec.dim) and x.dtype == torch.float32 and bool(torch.isfinite(x).all()),
                    "shapes", f"a training batch of 2 is {tuple(x.shape)} {x.dtype}; expected finite (2, {spec.dim}) float32")
    again = data.train_batch(2, gen(1))
    case.expect(torch.equal(x1, again[0]) and torch.equal(x2, again[1]), "shapes",
                "the same generator seed gives other batches (draw with the generator given)")
    batches = data.eval_batches("test", 2, 3, gen(2))
    case.expect(len(batches) == 3 and all(a.shape == b.shape == (2, spec.dim) for a, b in batches), "shapes",
                "eval_batches('test', 2, 3) is not 3 pairs of (2, dim) batches")
    case.refuses(ValueError, "shapes", "eval_batches accepts split 'validation' (raise ValueError)",
                 data.eval_batches, "validation", 2, 1, gen(2))
    case.expect(data.true_mi is None or data.true_mi > 0, "shapes", f"true_mi {data.true_mi} is not positive")
    if data.labelled:
        x_tr, y_tr, x_te, y_te = data.probe_data(gen(3))
        case.expect(x_tr.shape == (len(y_tr), spec.dim) and x_te.shape == (len(y_te), spec.dim)
                    and y_tr.dtype == torch.int64 and 0 <= int(y_tr.min()) and int(y_tr.max()) < data.n_classes,
                    "shapes", "probe_data is not (x (N, dim) float32, labels (N,) int64 below n_classes) per split")
    else:
        case.refuses(ConfigError, "shapes", "unlabelled data gives probe data (raise ConfigError)",
                     data.probe_data, gen(3))


def pairs(case: Case) -> None:
    du, dv = _critic_dims(case)
    critic = _build(case, 0, du, dv)
    u, v = _randn(4, du, seed=1), _randn(5, dv, seed=2)
    with torch.no_grad():
        s = critic(u, v)
        alone = torch.tensor([[critic(u[i:i + 1], v[j:j + 1]).item() for j in range(5)] for i in range(4)])
    # the same float32 arithmetic laid out as a K × K batch or one pair at a time: ≤ d·eps32 ≈ 1e-5
    case.expect(torch.allclose(s, alone, rtol=1e-5, atol=1e-5), "pairs",
                f"S[i, j] differs from the critic applied to (u_i, v_j) alone by up to "
                f"{(s - alone).abs().max().item():.3g}: scores must be f(u_i, v_j), row i the anchor u_i")


def ceiling(case: Case) -> None:
    if case.family == "critic":
        du, dv = _critic_dims(case)
        critic = _build(case, 0, du, dv)
        u = _randn(6, du, seed=1)
        with torch.no_grad():
            s = critic(u, _randn(6, dv, seed=2))
        nce = math.log(6) + (s.diagonal() - s.logsumexp(dim=1)).mean().item()
        case.expect(nce <= math.log(6) + 1e-6, "ceiling", f"InfoNCE over its scores is {nce:.4g} > log K = {math.log(6):.4g}")
        return
    est = case.cls(case.params)
    for k in (2, 8, 64):
        top = est.ceiling(k)
        if top is None:
            continue
        for scale, shift in ((1.0, 0.0), (3.0, 50.0), (0.01, 1000.0)):
            value = est(_scores(k, seed=k, scale=scale, shift=shift)).value.item()
            case.expect(value <= top + 1e-6, "ceiling", f"estimate {value:.6g} above its ceiling {top:.6g} at K = {k}")


def _records(outputs, r: int) -> list[dict]:
    return [{k: v for k, v in out[r].items() if k != "wall_s"} for out in outputs if out[r] is not None]


def _same(case: Case, check: str, expected: list[dict], got: list[dict], what: str) -> None:
    case.expect(len(expected) == len(got), check, f"{what}: {len(got)} records, expected {len(expected)}")
    for a, b in zip(expected, got):
        for key, va in a.items():
            vb = b.get(key)
            ok = (math.isclose(va, vb, rel_tol=REL, abs_tol=ABS) if isinstance(va, float) and isinstance(vb, float)
                  else va == vb)
            case.expect(ok, check, f"{what}: {key} at step {a['step']} is {vb}, expected {va}")


def log_ratio(x: torch.Tensor, y: torch.Tensor, rho: float) -> torch.Tensor:
    """log p(y_j | x_i) / p(y_j) for correlated Gaussians (y = ρx + √(1−ρ²)ε per coordinate): the optimal
    critic in closed form, (K, K)."""
    var = 1 - rho**2
    diff = y[None, :, :] - rho * x[:, None, :]
    return (-0.5 * math.log(var) - diff.square() / (2 * var) + y[None, :, :].square() / 2).sum(-1)


def calibration(case: Case) -> None:
    """On correlated Gaussians of known MI I: an estimator fed the optimal critic's scores (closed form,
    shifted by the constant its objective prefers) gives, if a lower bound, at least half of min(I, ceiling)
    and at most CALIBRATION_TOL more, else I ± CALIBRATION_TOL. A critic or an encoder, trained with
    InfoNCE in a real Trainer, reaches a quarter of I and at most CALIBRATION_TOL more."""
    if case.family == "estimator":
        got, low, high, how = _calibrate_estimator(case)
    else:
        with _registered(case):
            last = list(Trainer(case.trial(STEPS, STEPS)).run())[-1][0]
        got, low, high = last.get("bound_test"), MI / 4, min(MI, math.log(K)) + CALIBRATION_TOL
        how = f"trained {STEPS} steps with InfoNCE"
    case.expect(got is not None and low <= got <= high, "calibration",
                f"{how} on correlated Gaussians of {MI} nats (dim {DIM}), it estimates "
                f"{got if got is None else round(got, 4)} nats; expected between {low:.4g} and {high:.4g}")


def _calibrate_estimator(case: Case) -> tuple[float, float, float, str]:
    from mimax.trainables.data.gaussian import CorrelatedGaussian

    k, batches = 512, 4
    rho = CorrelatedGaussian.rho_for(MI, DIM)
    data = CorrelatedGaussian(CorrelatedGaussian.Params(dim=DIM, mi=MI))
    gen = torch.Generator().manual_seed(0)
    scores = [log_ratio(x, y, rho).double() for x, y in (data.train_batch(k, gen) for _ in range(batches))]
    est = case.cls(case.params).double().eval()
    with torch.no_grad():
        def mean_of(shift: float, field: str) -> float:
            return sum(float(getattr(est(s + shift), field)) for s in scores) / batches

        shift = max((c / 4 for c in range(-12, 13)), key=lambda c: mean_of(c, "objective"))
        got = mean_of(shift, "value")
    top = est.ceiling(k)
    want = min(MI, top) if top is not None else MI
    low, high = (want / 2, want + CALIBRATION_TOL) if case.cls.is_lower_bound else (MI - CALIBRATION_TOL, MI + CALIBRATION_TOL)
    return got, low, high, f"fed the optimal critic's scores + {shift:g} (K = {k})"


def pack(case: Case) -> None:
    with _registered(case):
        packed = list(Trainer(case.trial(20, 10, lr=SHORT_LR), seeds=[0, 1]).run())
        for r, seed in enumerate((0, 1)):
            lone = list(Trainer(case.trial(20, 10, seed=seed, lr=SHORT_LR)).run())
            _same(case, "pack", _records(lone, 0), _records(packed, r), f"seed {seed} in a pack of 2 vs alone")


def checkpoint(case: Case) -> None:
    _module_round_trip(case)
    with _registered(case), tempfile.TemporaryDirectory() as d:
        cfg = case.trial(20, 10, lr=SHORT_LR)
        full = _records(list(Trainer(cfg).run()), 0)
        head, t = [], Trainer(cfg)
        for out in t.run():
            head += _records([out], 0)
            if t.step == 10:
                t.save(Path(d) / "c.pt")
                break
        resumed = Trainer(cfg)
        resumed.load(Path(d) / "c.pt")
        _same(case, "checkpoint", full, head + _records(list(resumed.run()), 0), "a trainer saved at step 10, loaded")


def _module_round_trip(case: Case) -> None:
    if case.family == "estimator":
        def make(seed):
            est = case.cls(case.params)
            with torch.no_grad():
                for p in est.parameters():
                    p.add_(0.3 * (seed + 1))
            est.train()
            est(_scores(9, seed=5 + seed))  # moves any state it keeps
            return est

        def run(m):  # the estimate, and the gradient its state may shape (MINE's moving average)
            s = _scores(7, seed=3).requires_grad_(True)
            with torch.enable_grad():
                e = m.eval()(s)
                (grad,) = torch.autograd.grad(e.objective, s)
            return torch.cat([e.value.detach().reshape(1), e.objective.detach().reshape(1), grad.reshape(-1)])
    elif case.family == "encoder":
        view = _encoder_view(case)
        make = lambda seed: _build(case, seed, view)  # noqa: E731
        run = lambda m: m(_randn(3, view.dim, seed=4))  # noqa: E731
    else:
        du, dv = _critic_dims(case)
        make = lambda seed: _build(case, seed, du, dv)  # noqa: E731
        run = lambda m: m(_randn(3, du, seed=4), _randn(3, dv, seed=5))  # noqa: E731
    saved, other = make(0), make(1)
    if saved.state_dict():
        with torch.no_grad():
            a, b = run(saved), run(other)
        case.expect(not torch.equal(a, b), "checkpoint", "two seeds (or states) give the same outputs, so a round trip proves nothing")
    buf = io.BytesIO()
    torch.save(saved.state_dict(), buf)
    buf.seek(0)
    other.load_state_dict(torch.load(buf))
    with torch.no_grad():
        a, b = run(saved), run(other)
    case.expect(torch.equal(a, b), "checkpoint", "a copy loaded from its state_dict computes something else (keep state in "
                                    "parameters or buffers)")


CHECKS: dict[str, dict[str, Callable[[Case], None]]] = {
    "encoder": {"declares": declares, "shapes": shapes, "calibration": calibration, "pack": pack,
                "checkpoint": checkpoint},
    "critic": {"declares": declares, "shapes": shapes, "pairs": pairs, "ceiling": ceiling,
               "calibration": calibration, "pack": pack, "checkpoint": checkpoint},
    "estimator": {"declares": declares, "shapes": shapes, "ceiling": ceiling, "calibration": calibration,
                  "pack": pack, "checkpoint": checkpoint},
    "data": {"declares": declares, "shapes": shapes},
}


def checks_for(cls: type, params: Mapping[str, Any] | None = None) -> list[str]:
    """The names of the checks that apply to ``cls``: calibration needs data of known MI, so an encoder
    that takes only images is checked on digits without it."""
    case = Case(cls, params)
    if case.family not in CHECKS:
        raise ConformanceError(f"no conformance checks for the {case.family} family")
    names = list(CHECKS[case.family])
    if case.family == "encoder" and not case.flat_ok():
        names.remove("calibration")
    return names


def check(cls: type, params: Mapping[str, Any] | None = None, only: list[str] | None = None) -> None:
    """Run the checks of ``cls``'s family (``only``: those named) with ``params`` (else its defaults)."""
    case = Case(cls, copy.deepcopy(dict(params or {})))
    names = checks_for(cls, params)
    for name in only or names:
        if name not in names:
            raise ConformanceError(f"{case.label}: no check {name!r} applies (choose from {', '.join(names)})")
        CHECKS[case.family][name](case)
