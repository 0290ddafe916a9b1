"""The fast torch probe on learned features of every encoder family: it reaches the converged optimum.

Each case trains a (small) encoder of one family briefly under the paper's protocol (init tf, TF1's Adam)
and compares the test accuracy of the ``torch`` probe at the presets' settings (max_iter 100) with the
optimum of the same objective found independently: scikit-learn's Newton solver (newton-cg, tol 1e-8) in
float64 on MinMax-scaled features. Training is short and the encoders small; bench/probe_learned.py
does the same at the paper's sizes and steps (docs/PERFORMANCE.md). The probes fit the first N_TRAIN
training images, so that the oracle on 392-wide features stays a few seconds.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import MinMaxScaler
from threadpoolctl import threadpool_limits

from mimax.trainables.encoders import ENCODERS
from mimax.trainables.loop import Trainer
from mimax.trainables.probes import PROBES

N_TRAIN = 5000
TOLERANCE = 0.003  # 0.3 accuracy points: 30 of the 10,000 test images
PROTOCOL = {"data": {"name": "mnist"}, "init": "tf", "eval": {"every": 10**6, "probe": "none"}, "seed": 3}

# name -> (config, the encoder family it covers). Small widths where the paper's sizes cost minutes.
CASES = {
    "identity": ({"encoder": {"name": "identity"}, "critic": {"name": "bilinear"}, "estimator": {"name": "nce"},
                  "train": {"steps": 0, "adam": "tf1"}}, "identity"),
    # MLP and ConvNet trained with each of the paper's critics.
    **{f"mlp-{critic}": ({"encoder": {"name": "mlp"}, "critic": {"name": critic}, "estimator": {"name": "nwj"},
                          "train": {"steps": 100, "adam": "tf1"}}, "mlp")
       for critic in ("bilinear", "separable", "concat")},
    **{f"convnet-{critic}": ({"encoder": {"name": "convnet", "channels": [16, 32]}, "critic": {"name": critic},
                              "estimator": {"name": "nce"}, "train": {"steps": 60, "adam": "tf1"}}, "convnet")
       for critic in ("bilinear", "separable", "concat")},
    "residual-mlp": ({"encoder": {"name": "residual-mlp"}, "critic": {"name": "bilinear"},
                      "estimator": {"name": "nce"}, "train": {"steps": 60, "adam": "tf1"}}, "residual-mlp"),
    # RealNVP at initialisation (≈ a permutation of the pixels) and trained.
    **{name: ({"encoder": {"name": "realnvp", "layers": 4, "hidden": 64}, "critic": {"name": "bilinear"},
               "estimator": {"name": "nwj"}, "train": {"steps": steps, "adam": "tf1"}}, "realnvp")
       for name, steps in (("realnvp-init", 0), ("realnvp", 60))},
    # Fig. 1c's game: an affine RealNVP against a linear classifier (features with tiny shifts on constant
    # pixels, which MinMax blows up).
    "realnvp-adversarial": ({"encoder": {"name": "realnvp", "coupling": "affine", "layers": 4, "hidden": 64},
                             "train": {"mode": "adversarial", "steps": 30, "adam": "tf1"},
                             "adversarial": {"warmup": 30, "classifier_steps": 2}}, "realnvp"),
}


def test_every_encoder_family_has_a_case():
    assert {family for _, family in CASES.values()} == set(ENCODERS)


@pytest.fixture(scope="module")
def learned():
    """case -> (train features, train labels, test features, test labels), trained once per module."""
    cache = {}

    def get(case: str):
        if case not in cache:
            trainer = Trainer({**PROTOCOL, **CASES[case][0]})
            for _ in trainer.run():
                pass
            x_tr, y_tr, x_te, y_te = trainer.data.probe_data(torch.Generator().manual_seed(0))
            cache[case] = (trainer.features([x_tr[:N_TRAIN]])[0], y_tr[:N_TRAIN], trainer.features([x_te])[0], y_te)
        return cache[case]

    return get


def optimum_accuracy(x_tr, y_tr, x_te, y_te) -> float:
    """The oracle: the probe's objective (MinMax, multinomial logistic, C 10) minimised by Newton in float64."""
    scaler = MinMaxScaler().fit(x_tr.double().numpy())
    clf = LogisticRegression(C=10.0, solver="newton-cg", tol=1e-8, max_iter=1000)
    with warnings.catch_warnings(), threadpool_limits(1):  # one BLAS thread, like torch in the tests
        warnings.simplefilter("error")  # a fit that did not converge is no oracle
        clf.fit(scaler.transform(x_tr.double().numpy()), y_tr.numpy())
    return float(clf.score(scaler.transform(x_te.double().numpy()), y_te.numpy()))


def fast_accuracy(max_iter: int, x_tr, y_tr, x_te, y_te) -> float:
    probe = PROBES["torch"](PROBES["torch"].Params(max_iter=max_iter))
    return probe.fit_score(x_tr, y_tr, x_te, y_te)


@pytest.fixture(scope="module")
def optima(learned):
    cache = {}

    def get(case: str) -> float:
        if case not in cache:
            cache[case] = optimum_accuracy(*learned(case))
        return cache[case]

    return get


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(CASES))
def test_fast_probe_reaches_the_optimum(case, learned, optima):
    features = learned(case)
    # The presets' torch probe (max_iter 100; it stops by its tolerance).
    assert abs(fast_accuracy(100, *features) - optima(case)) <= TOLERANCE


@pytest.mark.slow
def test_a_probe_stopped_early_fails_the_check(learned, optima):
    """The check has teeth: two L-BFGS iterations leave the probe short of the optimum on some family."""
    misses = {case: abs(fast_accuracy(2, *learned(case)) - optima(case)) for case in sorted(CASES)}
    assert max(misses.values()) > TOLERANCE, misses
