"""The example's components pass mimax's conformance suite, one test per check."""

import pytest

import mimax.testing as mt
from mimax_example.components import LowRank, NoisyCopies, SymmetricNCE

CASES = [(cls, params, name) for cls, params in ((LowRank, {"rank": 4}), (SymmetricNCE, {}), (NoisyCopies, {}))
         for name in mt.checks_for(cls, params)]


@pytest.mark.parametrize("cls, params, check", CASES, ids=[f"{c.name}-{n}" for c, _, n in CASES])
def test_conformance(cls, params, check):
    mt.check(cls, params, only=[check])
