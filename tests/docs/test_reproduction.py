"""The committed docs/REPRODUCTION.md (and the README's size line) must be what the committed reference
database renders: this test fails when the two disagree, or when the database is missing.

The database, docs/reference/reproduce-cpu.db, is built by `make reproduce` over hours and committed
study by study, so the check renders with --partial: a study not in the database yet shows *pending*, as
the committed page must then show it too. Once the page shows no *pending*, a study missing from the
database makes the page differ, and the test fails. It never skips."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = ROOT / "docs" / "reference" / "reproduce-cpu.db"


@pytest.mark.slow
def test_the_committed_reproduction_md_is_what_the_reference_database_renders():
    assert REFERENCE.is_file(), (f"{REFERENCE.relative_to(ROOT)} is missing: build it with `make reproduce` and "
                                 "commit it (docs/REPRODUCTION.md is generated from it)")
    res = subprocess.run([sys.executable, str(ROOT / "docs" / "reproduction" / "generate.py"), "--check", "--partial"],
                         capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert res.returncode == 0, (f"docs/REPRODUCTION.md or README.md disagree with {REFERENCE.relative_to(ROOT)}; "
                                 f"run python docs/reproduction/generate.py and commit the result:\n"
                                 f"{res.stdout[-6000:]}{res.stderr}")
