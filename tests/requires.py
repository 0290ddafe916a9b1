"""Tests that need a system package: skipped with the reason on a developer's machine, FAILED in CI
(``CI=true``), where ``.ci/run`` installs the package, so that a missing package never passes unseen."""

from __future__ import annotations

import os

import pytest

IN_CI = os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")
# node id of a test -> the package it found present; tests/conftest.py puts it on the test's report and
# lists the outcomes at the end of the run, so that CI's log shows these tests ran (not only "not skipped").
FOUND: dict[str, str] = {}


def require(present: bool, what: str) -> None:
    """Go on when ``present``; else skip (fail in CI) naming ``what`` is missing and how to get it."""
    if present:
        test = os.environ.get("PYTEST_CURRENT_TEST", "").rsplit(" (", 1)[0]  # "NODEID (setup|call)"
        if test:
            FOUND[test] = what
        return
    if IN_CI:
        pytest.fail(f"CI requires {what}; .ci/run installs it", pytrace=False)
    pytest.skip(f"{what} is not installed")
