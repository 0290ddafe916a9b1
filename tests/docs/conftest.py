"""tests/docs: the documents generated from a results database (docs/reproduction/generate.py)."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# The planted databases of tests/analysis, and the generator's modules (a script, not a package).
sys.path[:0] = [str(ROOT / "tests" / "analysis"), str(ROOT / "docs" / "reproduction")]
