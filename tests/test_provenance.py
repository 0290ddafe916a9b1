"""Which code wrote a study: the commit each driver session records, and `make reproduce` refusing to add
to the reference database from a tree whose mimax/ is not committed (its sessions said `+dirty`: the
reference database itself, tracked and written by `make reproduce`, made every later session dirty).

Oracles: throw-away git repositories built here, and git's own answer for their HEAD."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from mimax.study.environment import git_commit

ROOT = Path(__file__).resolve().parent.parent


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True).stdout.strip()


@pytest.fixture
def repo(tmp_path) -> Path:
    """A checkout shaped like mimax's: the package, a tracked reference database, the Makefile."""
    (tmp_path / "mimax").mkdir()
    (tmp_path / "mimax" / "core.py").write_text("X = 1\n")
    (tmp_path / "docs" / "reference").mkdir(parents=True)
    (tmp_path / "docs" / "reference" / "reproduce-cpu.db").write_bytes(b"sessions 0")
    shutil.copy(ROOT / "Makefile", tmp_path / "Makefile")
    (tmp_path / "pyproject.toml").write_text("")  # what the install step depends on
    git(tmp_path, "init", "-q")
    git(tmp_path, "add", "-A", "-f")
    git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "base")
    return tmp_path


def test_a_session_is_dirty_only_when_the_package_differs_from_its_commit(repo):
    head = git(repo, "rev-parse", "HEAD")
    package = repo / "mimax"
    assert git_commit(package) == head
    (repo / "docs" / "reference" / "reproduce-cpu.db").write_bytes(b"sessions 0, 1")  # what make reproduce writes
    assert git_commit(package) == head
    (package / "new.py").write_text("Y = 2\n")  # an untracked module runs too
    assert git_commit(package) == f"{head}+dirty"
    (package / "new.py").unlink()
    (package / "core.py").write_text("X = 2\n")
    assert git_commit(package) == f"{head}+dirty"


def make(repo: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "--no-print-directory", "reference-clean", *args], cwd=repo,
                          capture_output=True, text=True, timeout=60)


def test_make_reproduce_refuses_the_reference_database_from_an_uncommitted_mimax(repo):
    assert make(repo).returncode == 0
    (repo / "docs" / "reference" / "reproduce-cpu.db").write_bytes(b"sessions 0, 1")
    assert make(repo).returncode == 0  # the database it writes is no reason to stop
    (repo / "mimax" / "core.py").write_text("X = 2\n")
    r = make(repo)
    assert r.returncode == 2
    assert r.stderr.splitlines()[0] == ("make reproduce: mimax/ has uncommitted changes; commit them before adding "
                                        "to sqlite:///docs/reference/reproduce-cpu.db")
    assert make(repo, "BUDGET=paper").returncode == 0  # a database of one's own: anything goes
    # and `make reproduce` checks it before anything else (before even the install)
    dry = subprocess.run(["make", "-n", "reproduce"], cwd=repo, capture_output=True, text=True, timeout=60)
    assert dry.stdout.index("make reproduce: mimax/ has uncommitted") < dry.stdout.index("pip install")
