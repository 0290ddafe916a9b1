"""``mimax verify CLAIMS --db URL``: exit 0 when every claim holds, 1 when any fails or is inconclusive,
2 for bad input (a malformed claims file, an unknown study, factor, level or metric)."""

from __future__ import annotations

import argparse
import json

from mimax.analysis.load import AnalysisError
from mimax.storage.db import DB_HELP

__all__ = ["N_BOOT", "at_least", "register", "run", "verify_command"]

N_BOOT = 10_000  # resamples (and permutations) per claim: p-values reach 1e-4, below Holm's levels


def at_least(minimum: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = minimum - 1
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected a whole number ≥ {minimum}, got {text!r}")
        return value

    return parse


def register(sub) -> None:
    p = sub.add_parser(
        "verify", help="test a claims file's findings against a study database",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Test the claims of a claims file against the studies of a database: each claim gets a "
                    "verdict (holds, fails, inconclusive, or untestable at this budget) with an estimate, an "
                    "interval over seeds and the seeds that would decide it; bound tests are checks, reported "
                    "apart; Holm's adjustment runs within each family of claims.",
        epilog="""a claims file is YAML:

  budget: [paper-steps, cpu]      # preset claims read the study PRESET-BUDGET (first one present)
  claims:
    - id: bilinear-beats-concat   # a claim that could come out otherwise
      finding: fig3 critics
      preset: fig3-critics        # or study: NAME
      metric: probe_accuracy.torch
      per: [estimator]            # must hold in every stratum
      order: {factor: critic, a: bilinear, op: ">", b: concat, by: 0.01}   # a beats b by at least 0.01
    - id: nce-below-ceiling       # true by construction: a check
      finding: fig3 critics
      preset: fig3-critics
      metric: bound_train
      where: {estimator: nce}
      bound: {at_most: ceiling}

tests: order (op >, >= with margin, <, <= with margin, ~ with tol, > / < with by), versus (a value,
another study, or the same trials at another step), correlation (sign of Spearman's rho), bound (a check).
Every key, the statistics and the exit status: docs/VERIFY.md.""")
    p.add_argument("claims", metavar="CLAIMS", help="claims file (YAML), or a shipped one by name: paper")
    p.add_argument("--db", help=DB_HELP)
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.add_argument("--out", metavar="DIR", help="also write verdicts.json and verdicts.md into DIR")
    p.add_argument("--budget", help="budget of the claims that name a preset but no budget: they read the study "
                                    "PRESET-BUDGET (default: the file's budget)")
    p.add_argument("--n-boot", type=at_least(100), default=N_BOOT, metavar="N",
                   help=f"bootstrap resamples and permutations per claim (default {N_BOOT})")
    p.add_argument("--seed", type=at_least(0), default=0, help="seed of the resampling (default 0)")
    p.set_defaults(func=verify_command)


def run(claims: str, db: str | None, *, n_boot: int = N_BOOT, seed: int = 0, budget: str | None = None, data=None):
    """Load the claims file (a path or a shipped name) and verify it; with ``data`` (a loaded study)
    only the claims about that study."""
    from mimax.analysis.claims.spec import load_claims
    from mimax.analysis.claims.verify import verify
    from mimax.storage.db import choose_url

    parsed, source = load_claims(claims)
    return verify(parsed, source, choose_url(db), n_boot=n_boot, seed=seed, budget=budget, data=data)


def verify_command(args) -> int:
    from mimax.analysis.claims import render

    result = run(args.claims, args.db, n_boot=args.n_boot, seed=args.seed, budget=args.budget)
    if args.out:
        try:
            render.write(result, args.out)
        except OSError as e:
            raise AnalysisError(f"cannot write to {args.out}: {e.strerror or e}") from None
    if args.json:
        print(json.dumps(render.as_json(result), allow_nan=False), flush=True)
    else:
        print("\n".join(render.lines(result)), flush=True)
    return 0 if result.all_hold else 1
