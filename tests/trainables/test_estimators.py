"""Estimators against independent oracles: pure-Python loops over pairs, closed forms, limits."""

from __future__ import annotations

import math

import pytest
import torch
from pydantic import ValidationError

from mimax.trainables.estimators import ESTIMATORS, Estimator


# ---------------------------------------------------------------- brute-force oracles (plain Python)

def _mean(xs):
    xs = list(xs)
    return sum(xs) / len(xs)


def _pos(s):
    return [s[i][i] for i in range(len(s))]


def _neg(s):
    k = len(s)
    return [s[i][j] for i in range(k) for j in range(k) if i != j]


def _softplus(x):
    return math.log1p(math.exp(x))


def nce_bf(s):
    k = len(s)
    return math.log(k) + _mean(s[i][i] - math.log(sum(math.exp(x) for x in s[i])) for i in range(k))


def nwj_bf(s):
    return _mean(_pos(s)) - math.exp(-1) * _mean(math.exp(x) for x in _neg(s))


def dv_bf(s):
    return _mean(_pos(s)) - math.log(_mean(math.exp(x) for x in _neg(s)))


def js_bf(s):
    return -_mean(_softplus(-x) for x in _pos(s)) - _mean(_softplus(x) for x in _neg(s))


def smile_bf(s, tau=5.0):
    return _mean(_pos(s)) - math.log(_mean(math.exp(min(max(x, -tau), tau)) for x in _neg(s)))


def tuba_bf(s, a=0.0):
    return 1 + _mean(x - a for x in _pos(s)) - _mean(math.exp(x - a) for x in _neg(s))


def kpair_bf(s):
    k = len(s)
    terms = [math.log(1 + sum(math.exp(s[i][j] - s[i][i]) for j in range(k) if j != i)) for i in range(k)]
    return math.log(k) - _mean(terms)


def triplet_bf(s):
    k = len(s)
    return math.log(2) - _mean(math.log(1 + math.exp(s[i][(i + 1) % k] - s[i][i])) for i in range(k))


VALUE_ORACLES = {
    "nce": nce_bf,
    "nwj": nwj_bf,
    "js": nwj_bf,  # train JS, report NWJ
    "dv": dv_bf,
    "mine": dv_bf,  # reports DV
    "smile": smile_bf,
    "tuba": tuba_bf,  # log-baseline initialised at 0
    "kpair": kpair_bf,
    "triplet": triplet_bf,
}

# (K, scale of the noise, shift added to the positives)
CASES = [(2, 1.0, 0.0), (2, 4.0, 3.0), (5, 3.0, 1.0), (8, 12.0, 0.0), (33, 0.5, 2.0), (33, 10.0, 5.0)]


def scores_for(k, scale, shift, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed * 1000 + k)
    s = scale * torch.randn(k, k, generator=g, dtype=torch.float64) + shift * torch.eye(k, dtype=torch.float64)
    return s.to(dtype)


def make(name, **params) -> Estimator:
    cls = ESTIMATORS[name]
    return cls(cls.Params(**params))


def test_every_estimator_has_a_brute_force_oracle():
    assert set(VALUE_ORACLES) == set(ESTIMATORS)


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"K{c[0]}-s{c[1]}-d{c[2]}")
@pytest.mark.parametrize("name", sorted(VALUE_ORACLES))
def test_value_matches_brute_force(name, case):
    for seed in range(2):
        s = scores_for(*case, seed=seed)
        got = make(name)(s).value.item()
        want = VALUE_ORACLES[name](s.tolist())
        assert got == pytest.approx(want, rel=1e-10, abs=1e-10)


@pytest.mark.parametrize("tau", [0.5, 2.0, 100.0])
def test_smile_clips_negatives_at_tau(tau):
    s = scores_for(8, 6.0, 2.0)
    assert make("smile", tau=tau)(s).value.item() == pytest.approx(smile_bf(s.tolist(), tau), rel=1e-10)
    # tau beyond every score: plain DV
    if tau >= s.abs().max().item():
        assert make("smile", tau=tau)(s).value.item() == pytest.approx(dv_bf(s.tolist()), rel=1e-12)


def test_tuba_with_baseline_matches_brute_force_and_equals_nwj_at_one():
    s = scores_for(7, 2.0, 1.0)
    tuba = make("tuba")
    with torch.no_grad():
        tuba.log_baseline.fill_(-0.7)
    assert tuba(s).value.item() == pytest.approx(tuba_bf(s.tolist(), -0.7), rel=1e-6)  # a is float32
    with torch.no_grad():
        tuba.log_baseline.fill_(1.0)
    assert tuba(s).value.item() == pytest.approx(make("nwj")(s).value.item(), rel=1e-12, abs=1e-12)


def test_tuba_baseline_is_trained():
    tuba = make("tuba")
    assert [n for n, _ in tuba.named_parameters()] == ["log_baseline"]
    s = scores_for(6, 1.0, 2.0)
    tuba.loss(tuba(s)).backward()
    assert tuba.log_baseline.grad is not None and tuba.log_baseline.grad.item() != 0


# ---------------------------------------------------------------- closed forms and limits

def test_nce_tends_to_log_k_on_a_scaled_identity():
    k = 5
    errors = [math.log(k) - make("nce")(c * torch.eye(k, dtype=torch.float64)).value.item() for c in (1, 5, 20, 50)]
    # closed form: log K - I = log(1 + (K - 1) e^{-c})
    assert errors[0] == pytest.approx(math.log(1 + (k - 1) * math.exp(-1)), rel=1e-12)
    assert all(a > b for a, b in zip(errors, errors[1:]))
    assert abs(errors[-1]) < 1e-6


def test_nwj_of_zero_scores_is_minus_one_over_e():
    for k in (2, 5, 128):
        assert make("nwj")(torch.zeros(k, k, dtype=torch.float64)).value.item() == -math.exp(-1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_nce_never_exceeds_log_k(dtype):
    slack = 4 * torch.finfo(dtype).eps  # log K rounded to the scores' precision
    for seed in range(40):
        k = (2, 3, 16, 128)[seed % 4]
        scale = (1e-3, 1.0, 30.0, 1e4, 1e30)[seed % 5]
        s = scores_for(k, scale, shift=scale * (seed % 3), seed=seed, dtype=dtype)
        for name in ("nce", "kpair"):
            value = make(name)(s).value.item()
            assert math.isfinite(value)
            assert value <= math.log(k) * (1 + slack)


def test_kpair_equals_nce():
    for seed, (k, scale, shift) in enumerate(CASES):
        s = scores_for(k, scale, shift, seed=seed)
        assert make("kpair")(s).value.item() == pytest.approx(make("nce")(s).value.item(), rel=1e-12, abs=1e-12)


def test_triplet_is_nce_on_the_two_by_two_blocks():
    # anchor i against its one negative (i+1) mod K: the K = 2 InfoNCE bound on each anchor row
    s = scores_for(6, 3.0, 1.0)
    rows = []
    for i in range(6):
        j = (i + 1) % 6
        rows.append(math.log(2) + s[i, i].item() - math.log(math.exp(s[i, i].item()) + math.exp(s[i, j].item())))
    assert make("triplet")(s).value.item() == pytest.approx(_mean(rows), rel=1e-12)


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"K{c[0]}-s{c[1]}-d{c[2]}")
def test_js_and_smile_train_the_fgan_js_bound(case):
    s = scores_for(*case)
    want = js_bf(s.tolist())
    assert make("js")(s).objective.item() == pytest.approx(want, rel=1e-10, abs=1e-10)
    assert make("smile")(s).objective.item() == pytest.approx(want, rel=1e-10, abs=1e-10)


def test_ceilings_and_flags():
    assert make("nce").ceiling(128) == pytest.approx(4.8520, abs=1e-4)
    assert make("kpair").ceiling(7) == math.log(7)
    assert make("triplet").ceiling(128) == math.log(2)
    for name in ("nwj", "js", "dv", "mine", "smile", "tuba"):
        assert make(name).ceiling(128) is None
    assert {n for n, c in ESTIMATORS.items() if not c.is_lower_bound} == {"dv", "mine", "smile"}


# ---------------------------------------------------------------- MINE's moving average

def _grad(fn, s):
    s = s.clone().requires_grad_(True)
    fn(s).backward()
    return s.grad


def test_mine_objective_is_dv_numerically_but_its_gradient_uses_the_average():
    mine = make("mine", ema_rate=0.25)
    s1 = scores_for(6, 1.0, 2.0, seed=1)
    s2 = scores_for(6, 1.0, 2.0, seed=2) + 3.0  # mean e^{S_ij} is ~e^3 times larger than the average

    # first batch: the average starts at the batch mean, so the gradient is DV's
    g_mine = _grad(lambda s: mine(s).objective, s1)
    g_dv = _grad(lambda s: make("dv")(s).value, s1)
    torch.testing.assert_close(g_mine, g_dv, rtol=1e-6, atol=1e-9)  # the average is float32
    m1 = _mean(math.exp(x) for x in _neg(s1.tolist()))
    assert mine.ema.item() == pytest.approx(m1, rel=1e-6)

    est = mine(s2)
    m2 = _mean(math.exp(x) for x in _neg(s2.tolist()))
    ema = 0.75 * m1 + 0.25 * m2
    assert mine.ema.item() == pytest.approx(ema, rel=1e-6)
    assert est.objective.item() == pytest.approx(dv_bf(s2.tolist()), rel=1e-10)
    assert est.value.item() == pytest.approx(dv_bf(s2.tolist()), rel=1e-10)

    # d objective / d S: 1/K on the diagonal, -e^{S_ij} / (K(K-1) ema) off it (Belghazi et al.)
    mine.load_state_dict({"ema": torch.tensor(m1)})
    g = _grad(lambda s: mine(s).objective, s2)
    k = 6
    for i in range(k):
        for j in range(k):
            want = 1 / k if i == j else -math.exp(s2[i, j].item()) / (k * (k - 1) * ema)
            assert g[i, j].item() == pytest.approx(want, rel=1e-5)
    g_dv = _grad(lambda s: make("dv")(s).value, s2)
    assert not torch.allclose(g, g_dv, rtol=1e-2)


def test_mine_average_round_trips_and_is_frozen_in_eval():
    mine = make("mine")
    assert "ema" in mine.state_dict()
    mine.eval()
    s = scores_for(5, 1.0, 1.0)
    assert math.isfinite(mine(s).objective.item())
    assert math.isnan(mine.ema.item())  # evaluation does not initialise it either

    mine.train()
    for seed in range(3):
        mine(scores_for(5, 1.0, 1.0, seed=seed))
    trained = mine.ema.clone()
    mine.eval()
    mine(scores_for(5, 1.0, 1.0, seed=9) + 4.0)
    assert torch.equal(mine.ema, trained)

    restored = make("mine")
    restored.load_state_dict(mine.state_dict())
    assert torch.equal(restored.ema, trained)
    restored.eval()
    s = scores_for(5, 1.0, 1.0, seed=7) + 2.0
    torch.testing.assert_close(_grad(lambda x: restored(x).objective, s), _grad(lambda x: mine(x).objective, s))


def test_extra_params_are_validated():
    with pytest.raises(ValidationError):
        ESTIMATORS["smile"].Params(tau=0)
    for rate in (0, 1.5):
        with pytest.raises(ValidationError):
            ESTIMATORS["mine"].Params(ema_rate=rate)
    assert ESTIMATORS["mine"].Params(ema_rate=1).ema_rate == 1
    assert ESTIMATORS["smile"].Params().tau == 5.0 and ESTIMATORS["mine"].Params().ema_rate == 0.01
