"""Start or join a Ray cluster, and refuse resource requests it can never meet."""

from __future__ import annotations

import os
import re
import socket
import sys
from contextlib import contextmanager
from typing import Callable

from mimax.storage.db import first_line
from mimax.errors import ConfigError


# A host name the resolver takes as it is (labels of 1-63 ASCII characters), an IPv4 or a bracketed IPv6.
_HOST = re.compile(r"[A-Za-z0-9-]{1,63}(\.[A-Za-z0-9-]{1,63})*|\[[0-9A-Fa-f:.]+\]")


def parse_address(address: str) -> tuple[str, int] | None:
    """(host, port) of ``address`` (HOST:PORT, or SCHEME://HOST:PORT), None for auto and local."""
    if address in ("auto", "local"):
        return None
    host, sep, port = address.split("://", 1)[-1].rpartition(":")
    if not (sep and _HOST.fullmatch(host) and len(host) <= 253 and port.isascii() and port.isdigit()
            and 0 < int(port) < 65536):
        raise ConfigError("--address", f"expected HOST:PORT of a Ray head node, got {address!r}")
    return host.strip("[]"), int(port)


def _check_reachable(address: str) -> None:
    """Fail in seconds, with one line, instead of letting ray.init retry for minutes."""
    hostport = parse_address(address)
    if hostport is None:
        return
    try:
        socket.create_connection(hostport, timeout=3).close()
    except OSError as exc:
        raise ConfigError("--address", f"cannot reach a Ray cluster at {address}: {exc.strerror or exc}") from None


@contextmanager
def _stderr_held():
    """Hold what is written to fd 2 (Ray's C++ client logs each failed retry there) until we know
    whether joining worked: on failure the user gets one line instead of a screenful."""
    import tempfile

    held = {"text": ""}
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+") as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield held
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            held["text"] = tmp.read()


def connect(address: str | None, scrub: Callable[[str], str] | None = None) -> dict:
    """``ray.init``: a private local cluster on loopback, or join ``address``. Returns cluster resources.

    ``scrub`` removes secrets from text: Ray records the driver's command line (read from the OS, not
    sys.argv) as the job's entrypoint, so a database password given with --db is scrubbed there.
    """
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # The database is the record: no per-trial CSV/JSON/TensorBoard loggers, no snapshot-rate warnings.
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    # Nor Tune's experiment state (resume reads the database): each snapshot serialises every trial of the
    # session, so at Tune's default period it took a fifth of the driver in a long study (docs/STUDIES.md).
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "600")
    import logging

    logging.getLogger("ray").setLevel(logging.ERROR)  # mimax reports progress itself
    import ray

    if ray.is_initialized():
        return ray.cluster_resources()
    if scrub is not None:
        from mimax.study.adapters import scrub_ray_entrypoint

        scrub_ray_entrypoint(scrub)
        sys.argv = [scrub(a) for a in sys.argv]
    kwargs = dict(include_dashboard=False, log_to_driver=False, configure_logging=True, logging_level="ERROR")
    if address:
        _check_reachable(address)
        try:
            with _stderr_held() as held:
                ray.init(address=address, **kwargs)
            sys.stderr.write(held["text"])
        except ConnectionError as exc:
            hint = " (a head with token authentication needs RAY_AUTH_MODE=token and its token)" \
                if "auth" in str(exc).lower() or os.environ.get("RAY_AUTH_MODE") != "token" else ""
            first = first_line(exc)
            raise ConfigError("--address", f"the Ray cluster at {address} refused this driver: {first}{hint}") from None
    else:
        ray.init(address="local", _node_ip_address="127.0.0.1", **kwargs)
    for name in ("ray", "ray.tune", "ray.train"):
        logging.getLogger(name).setLevel(logging.ERROR)
    return ray.cluster_resources()


def check_resources(cpus_per_trial: float, gpus_per_trial: float) -> None:
    """A trial that no single node can host would stay PENDING forever in Ray: refuse it up front."""
    import ray

    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    max_cpu = max((n.get("CPU", 0) for n in nodes), default=0)
    max_gpu = max((n.get("GPU", 0) for n in nodes), default=0)
    if cpus_per_trial > max_cpu:
        raise ConfigError("--cpus-per-trial", f"{cpus_per_trial:g} CPUs per trial, but the largest node of the Ray "
                                              f"cluster has {max_cpu:g}")
    if gpus_per_trial > max_gpu:
        raise ConfigError("--gpus-per-trial", f"{gpus_per_trial:g} GPUs per trial, but the largest node of the Ray "
                                              f"cluster has {max_gpu:g}; such a trial would wait forever")


def shutdown() -> None:
    import ray

    if ray.is_initialized():
        ray.shutdown()
