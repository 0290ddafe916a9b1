"""How often `mimax verify` calls a false claim proven: the claim "a > b" under a true null (both sides
standard normal, n seeds each), nominal level alpha / 2 = 0.025, against a plain percentile bootstrap
(what `mimax analyze` shows) in the same run. docs/VERIFY.md quotes the output. About 20 s on one core.
"""

import numpy as np

from mimax.analysis.claims import evidence as E

rng = np.random.default_rng(2026)
R, B = 4000, 1000
for n in (2, 3, 5, 10, 20):
    ours = naive = 0
    for _ in range(R):
        a, b = rng.standard_normal(n), rng.standard_normal(n)
        ours += E.compare(E.contrast([(1.0, a), (-1.0, b)], B, rng), ">", 0.05).p_holds <= 0.025
        boot = a[rng.integers(0, n, (B, n))].mean(1) - b[rng.integers(0, n, (B, n))].mean(1)
        naive += (1 + (boot <= 0).sum()) / (B + 1) <= 0.025
    print(f"n={n:2d} seeds per side: mimax verify {ours / R:.4f}  percentile bootstrap {naive / R:.4f}  "
          f"(nominal 0.025, {R} replicates)")
