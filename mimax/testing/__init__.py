"""The conformance suite every mimax component passes, for users' own components too.

::

    import mimax.testing as mt

    def test_my_critic():
        mt.check(MyCritic, {"hidden": 16})        # every check of its family; raises on the first failure

    @pytest.mark.parametrize("name", mt.checks_for(MyEstimator))   # or one test per check
    def test_my_estimator(name):
        mt.check(MyEstimator, only=[name])

A failing check raises ``ConformanceError`` (an AssertionError) whose message names the component, the
check and what is wrong. The checks (``CHECKS``, by family):

- ``declares``: a name, a Params model whose every field has a default (or is given), a subclass of the
  family's base; ``has_parameters`` true to the module (an encoder, critic or estimator);
- ``shapes``: what the component returns for a small batch (features (B, out_dim); scores (Ku, Kv);
  an Estimate of scalar tensors with finite, non-zero gradients; batches of the view's shape);
- ``pairs`` (critics): the K×K scores equal the critic applied to each pair (u_i, v_j) alone;
- ``ceiling`` (critics, estimators): InfoNCE over the critic's scores, and an estimator with a
  ``ceiling(K)`` on any scores, never exceed it (log K for NCE);
- ``calibration``: trained in a real ``Trainer`` on correlated Gaussians of known MI I (closed form,
  ``data.gaussian``): a lower bound (any critic or encoder, trained with InfoNCE) reaches half of
  min(I, ceiling) and exceeds it by at most ``CALIBRATION_TOL`` nats; another estimator ends within
  ``CALIBRATION_TOL`` of I;
- ``pack``: a pack of two seeds computes what each seed's lone run computes;
- ``checkpoint``: a state_dict round trip gives the same outputs, and a saved trainer continues exactly.

A component that is not registered is registered for the duration of a check (and removed after).
"""

from mimax.testing.suite import CALIBRATION_TOL, CHECKS, ConformanceError, check, checks_for

__all__ = ["CALIBRATION_TOL", "CHECKS", "ConformanceError", "check", "checks_for"]
