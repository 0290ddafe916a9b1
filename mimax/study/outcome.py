"""The truth about how a trial ended, decided in one place for the store and for Optuna."""

from __future__ import annotations

import re
from typing import Any, Mapping


def final_state(result: Mapping[str, Any] | None, steps: int, error: bool) -> str:
    """``completed`` only when the last evaluation is the last step; a trial the scheduler stopped
    early is ``pruned`` (never COMPLETE with a partial value); a non-finite loss is ``diverged``."""
    if error:
        return "failed"
    if not result:
        return "pruned"
    if result.get("event") == "diverged":
        return "diverged"
    return "completed" if result.get("step") == steps else "pruned"


def objective_values(final: Mapping[str, Any], metrics: list[str]) -> list[float] | None:
    """The objective values of one replicate's final record, or None if any is missing."""
    values = [final.get(m) for m in metrics]
    return None if any(v is None for v in values) else [float(v) for v in values]


# Ray's own failures (ray/exceptions.py): by class name, and by what their str() says, since Tune
# writes str(exception) into the trial's error file.
RAY_SYSTEM_ERRORS = (
    "RayActorError", "ActorDiedError", "ActorUnavailableError", "WorkerCrashedError", "NodeDiedError",
    "OwnerDiedError", "ObjectLostError", "ObjectReconstructionFailedError", "RaySystemError",
    "LocalRayletDiedError",
)
RAY_SYSTEM_MESSAGES = (
    "The actor died",  # ActorDiedError: its process or its node died
    "The actor experienced an error before finishing this task",  # RayActorError
    "actor is temporarily unavailable",  # ActorUnavailableError
    "may or may not have been executed on the actor",  # ActorUnavailableError
    "The worker died unexpectedly while executing this task",  # WorkerCrashedError
    "The task's local raylet died",  # LocalRayletDiedError
    "the node it was running on is dead or unavailable",  # NodeDiedError
    "have been lost due to node failure",  # ObjectLostError
    "The object's owner has exited",  # OwnerDiedError
    "running low on memory",  # Ray's memory monitor killed the worker
)
_FAILURE = re.compile(r"^Failure # \d+ \(occurred at [^)]*\)\s*$", re.M)
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_FRAME = re.compile(r'^\s+File "', re.M)


def interrupted(error: str | None) -> bool:
    """Whether a trial's error text is Ray's infrastructure failing under it (its worker process
    killed, its node gone, the cluster stopped) rather than an exception raised by the trainable:
    such a trial lost only time, and is run again from its last checkpoint."""
    if not error:
        return False
    text = _ANSI.sub("", error)
    text = _FAILURE.split(text)[-1].strip()  # Tune's error file appends one block per failure
    if text.startswith("System error:"):  # RaySystemError, whose text may carry a traceback
        return True
    if _FRAME.search(text):
        # A Python traceback (a RayTaskError, or an actor whose __init__ raised): code raised it.
        # Only a Ray system error raised through that code is an interruption.
        return _exception_name(text).rsplit(".", 1)[-1] in RAY_SYSTEM_ERRORS
    return any(name in text for name in RAY_SYSTEM_ERRORS) or any(m in text for m in RAY_SYSTEM_MESSAGES)


def _exception_name(traceback: str) -> str:
    """The type of the exception a traceback ends with: the first unindented line after its last frame."""
    lines = traceback[[m.start() for m in _FRAME.finditer(traceback)][-1]:].splitlines()
    for line in lines[1:]:
        if line and not line[0].isspace():
            return line.split(":", 1)[0].strip()
    return ""
