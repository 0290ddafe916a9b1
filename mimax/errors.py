"""One error type for bad user input: it always names the offending key."""

from __future__ import annotations


class ConfigError(ValueError):
    """Bad input. ``str(err)`` is the one line shown to the user: ``path: what is wrong``."""

    def __init__(self, path: str, message: str):
        self.path = path
        self.message = message
        super().__init__(f"{path}: {message}" if path else message)

    def __reduce__(self):  # copied and pickled whole (Ray copies a trial's error to report it)
        return type(self), (self.path, self.message)


def from_validation_error(exc, prefix: str = "", unknown_first: bool = False) -> ConfigError:
    """Turn the first error of a pydantic ValidationError into a ConfigError with a dotted path;
    ``unknown_first``: an unknown key before any other error (a misspelt key explains the missing one)."""
    errors = exc.errors()
    err = min(errors, key=lambda e: e.get("type") != "extra_forbidden") if unknown_first else errors[0]
    loc = [str(p) for p in err.get("loc", ()) if not str(p).startswith("function-")]
    path = ".".join([prefix] * bool(prefix) + loc)
    kind = err.get("type", "")
    if kind == "extra_forbidden":
        return ConfigError(path, "unknown key")
    if kind == "missing":
        return ConfigError(path, "missing required key")
    msg = err.get("msg", "invalid value")
    msg = msg[0].lower() + msg[1:] if msg else msg
    if "input" in err and kind not in ("value_error",):
        got = err["input"]
        msg = f"{msg}, got {repr(got) if isinstance(got, str) else got}"
    return ConfigError(path, msg.removeprefix("value error, "))
