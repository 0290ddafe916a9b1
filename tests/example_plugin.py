"""Where the example plugin lives, and how a test puts a plugin directory on the path (a module of its own,
not conftest: with several test directories in one run, ``conftest`` names whichever was imported last)."""
import os
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "plugin"


def on_pythonpath(monkeypatch, directory) -> None:
    """``directory`` importable here and in every process started from here (mimax drivers, Ray's nodes
    and their workers), as a plugin is that is not installed."""
    old = os.environ.get("PYTHONPATH")
    monkeypatch.setenv("PYTHONPATH", f"{directory}:{old}" if old else str(directory))
    monkeypatch.syspath_prepend(str(directory))
