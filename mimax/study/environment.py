"""What a study ran on: package versions, code version, machine. Recorded once per driver session."""

from __future__ import annotations

import os
import platform
import socket
import subprocess
import sys
from importlib import metadata
from pathlib import Path

PACKAGES = {"mimax_version": "mimax", "torch": "torch", "ray": "ray", "optuna": "optuna", "sqlalchemy": "sqlalchemy"}


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


PACKAGE = Path(__file__).resolve().parent.parent  # mimax/


def git_commit(package: Path = PACKAGE) -> str | None:
    """The commit of the checkout ``package`` (mimax/) is imported from, '+dirty' when the code there
    differs from it. Only there: the rest of a checkout (docs, tests, the reference database that `make
    reproduce` writes into) does not change what ran."""
    try:
        run = lambda *args: subprocess.run(  # noqa: E731
            ["git", *args], cwd=package, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        commit = run("rev-parse", "HEAD")
        dirty = run("status", "--porcelain", "--", ".")  # untracked modules too: they run
    except (OSError, subprocess.SubprocessError):
        return None
    return (commit + "+dirty" if dirty else commit) or None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _gpu() -> str | None:
    try:
        import torch

        if torch.cuda.is_available():
            return ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
    except Exception:  # a broken CUDA install must not stop a study from recording what it can
        pass
    return None


def collect_environment(device: str = "cpu") -> dict:
    """Versions (mimax, python, torch, ray, optuna, sqlalchemy), git commit, host, platform, CPU, GPU."""
    info: dict = {key: _version(dist) for key, dist in PACKAGES.items()}
    if info["mimax_version"] is None:  # running from a source tree that is not installed
        from mimax import __version__

        info["mimax_version"] = __version__
    info.update(
        python=platform.python_version(),
        python_implementation=platform.python_implementation(),
        executable=sys.executable,
        git_commit=git_commit(),
        hostname=socket.gethostname(),
        platform=platform.platform(),
        cpu=_cpu_model(),
        cpu_count=os.cpu_count(),
        gpu=_gpu(),
        device=device,
    )
    return info
