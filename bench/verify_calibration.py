"""How often `mimax verify` calls a false claim proven: the claim "a > b" under a true null (both sides
standard normal, n seeds each), nominal level alpha / 2 = 0.025, against a plain percentile bootstrap
(what `mimax analyze` shows) in the same run; and how much pooling the variance over a study's
configurations buys: the power at a true effect of one sd, the claim's two configurations alone
(Welch) against the same two among six (pooled, df 6(n − 1)). docs/VERIFY.md quotes the output.
"""

import numpy as np
import pandas as pd

from mimax.analysis.claims import evidence as E

rng = np.random.default_rng(2026)
R, B = 4000, 1000


def frame(values: dict[str, np.ndarray]) -> pd.DataFrame:
    return pd.DataFrame([{"config_id": c, "seed": s, "value": v} for c, xs in values.items() for s, v in enumerate(xs)])


for n in (2, 3, 5, 10, 20):
    ours = naive = welch = pooled = 0
    for _ in range(R):
        a, b = rng.standard_normal(n), rng.standard_normal(n)
        f = frame({"a": a, "b": b})
        ours += E.compare(E.fit(f).contrast({"a": 1.0, "b": -1.0}), ">", 0.05).p_holds <= 0.025
        boot = a[rng.integers(0, n, (B, n))].mean(1) - b[rng.integers(0, n, (B, n))].mean(1)
        naive += (1 + (boot <= 0).sum()) / (B + 1) <= 0.025
        six = {"a": a + 1.0, "b": b, **{c: rng.standard_normal(n) for c in "cdef"}}  # a − b = one sd
        welch += E.compare(E.fit(frame(six), pool=False).contrast({"a": 1.0, "b": -1.0}), ">", 0.05).p_holds <= 0.025
        pooled += E.compare(E.fit(frame(six)).contrast({"a": 1.0, "b": -1.0}), ">", 0.05).p_holds <= 0.025
    print(f"n={n:2d} seeds: false 'holds': mimax verify {ours / R:.4f}, percentile bootstrap {naive / R:.4f} "
          f"(nominal 0.025); power at one sd: Welch on 2 configurations {welch / R:.3f}, pooled over 6 "
          f"{pooled / R:.3f} ({R} replicates)")
