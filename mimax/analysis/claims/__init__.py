"""Findings as code: claims about studies in a YAML file, tested against a results database.

``load_claims(path_or_name)`` parses and validates a claims file (``"paper"``: the shipped paper.yaml);
``verify(claims, source, db_url)`` returns a :class:`Verification`: a :class:`Verdict` per claim
(holds / fails / inconclusive, with the estimate, interval, n and p-values) and a verdict per finding.
``mimax verify`` is the command line over them; docs/VERIFY.md gives the format and the semantics.
"""

from mimax.analysis.claims.spec import Claim, ClaimsFile, load_claims
from mimax.analysis.claims.verify import Verdict, Verification, verify

__all__ = ["Claim", "ClaimsFile", "Verdict", "Verification", "load_claims", "verify"]
