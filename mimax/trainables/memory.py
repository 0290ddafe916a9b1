"""How many replicates of a trial fit its device, and what to do when a pack does not.

``replicate_bytes`` estimates one replicate's memory from modules built on the meta device;
``fitting_pack_size`` divides ``FILL`` of the free memory by it; ``auto_pack_size`` adds the CPU policy
(a probe-heavy trial packs nothing there). ``start_or_split`` starts a fresh pack, or says into what
size to split it: the one driver of out-of-memory handling (the Ray adapter's).
"""

from __future__ import annotations

import gc
import itertools
import math
import os
from typing import Any, Callable, Iterator, Mapping

import torch

from mimax.errors import ConfigError
from mimax.trainables.config import TrialConfig, resolve
from mimax.trainables.data import DATASETS
from mimax.trainables.loop import raw_config, resolve_device, seeded
from mimax.trainables.modes import MODES

FILL = 0.7  # fraction of the free memory a pack may plan to use
GIB = 1 << 30
PROBE_ROWS = 70_000  # MNIST-sized train + test features, for the probe's share of the estimate


def free_memory(device: str | torch.device | None = None) -> int:
    """Bytes free on ``device``: ``torch.cuda.mem_get_info`` on a GPU, MemAvailable of /proc/meminfo on CPU;
    at most ``MIMAX_FREE_MEMORY`` bytes when that is set (a device shared with other jobs)."""
    cap = _memory_cap()
    dev = resolve_device(str(device or "auto"))
    free = int(torch.cuda.mem_get_info(dev)[0]) if dev.type == "cuda" else _available_ram()
    return free if cap is None else min(free, cap)


def _available_ram() -> int:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 4 * GIB  # no /proc (not Linux): a modest guess


def _memory_cap() -> int | None:
    text = os.environ.get("MIMAX_FREE_MEMORY", "").strip()
    if not text:
        return None
    try:
        cap = float(text)
    except ValueError:
        cap = math.nan
    if not math.isfinite(cap) or cap < 0:
        raise ConfigError("MIMAX_FREE_MEMORY", f"expected a number of bytes ≥ 0 (like 2e9), got {text!r}")
    return int(cap)


def replicate_bytes(config: Mapping[str, Any] | TrialConfig) -> int:
    """An estimate of one replicate's memory: parameters × (weights + grads + Adam's two moments) in
    float32, plus the activations of one training step at batch K (every module's output, twice: kept
    for backward and its gradient), plus the probe's features and, with ``eval.jacobian``, reverse
    mode's out_dim copies of a 32-example chunk's activations. Built on the meta device: nothing is
    allocated and no data is read."""
    res = resolve(dict(raw_config(config), seed=0))
    cfg = res.config
    k = cfg.train.batch_size
    sizes: list[int] = []

    def hook(_module, _inputs, output):
        if torch.is_tensor(output):
            sizes.append(output.numel())

    with seeded(0), torch.device("meta"):
        mods = MODES[cfg.train.mode].build(res, res.view, "meta")
        n = sum(p.numel() for m in mods.values() for p in m.parameters())
        handles = [sub.register_forward_hook(hook) for m in mods.values() for sub in m.modules()]
        x = torch.zeros(k, res.view.dim)
        u = mods["g1"](x)
        per_example = sum(sizes) // k  # g1's activations per example
        if "critic" in mods:
            mods["critic"](u, mods["g2"](x))
        else:
            mods["classifier"](u)
        for h in handles:
            h.remove()
        out_dim = u.shape[1]
    total = 16 * n + 2 * 4 * sum(sizes)
    if res.probes:
        total += 2 * 4 * PROBE_ROWS * (out_dim + 10)
    if cfg.eval.jacobian:
        total += 4 * per_example * min(32, cfg.eval.jacobian_batch) * out_dim
    return int(total)


def auto_pack_size(
    config: Mapping[str, Any] | TrialConfig, n_seeds: int, device: str | None = None, free_bytes: int | None = None,
    share: float = 1.0,
) -> int:
    """How many replicates to pack: as many as fit in ``FILL`` of the free memory (``free_bytes`` if
    given, else ``share`` of what is free on ``device``), at least 1 and at most ``n_seeds``.

    On a CPU, a trial that fits a probe on 10,000 images or more packs nothing: there the probe, not the
    vmapped step, dominates, and a pack ran fig3-critics 0.77x as fast as one trial per seed (PERFORMANCE.md)."""
    raw = raw_config(config)
    if free_bytes is None:
        dev = resolve_device(str(device or raw.get("device", "cpu")))
        if dev.type == "cpu" and _probe_heavy(raw):
            return 1
    return fitting_pack_size(config, n_seeds, device, share, free_bytes)


def fitting_pack_size(
    config: Mapping[str, Any] | TrialConfig, n_seeds: int, device: str | None = None, share: float = 1.0,
    free_bytes: int | None = None,
) -> int:
    """How many replicates fit in ``FILL`` of the free memory (``free_bytes`` if given, else ``share`` of
    what is free on ``device``), at least 1 and at most ``n_seeds``: memory alone, no speed policy."""
    if n_seeds < 1:
        return 1
    if free_bytes is None:
        dev = resolve_device(str(device or raw_config(config).get("device", "cpu")))
        free_bytes = int(free_memory(dev) * share)
    per = max(1, replicate_bytes(config))
    return max(1, min(n_seeds, int(FILL * free_bytes) // per))


def _probe_heavy(raw: Mapping[str, Any]) -> bool:
    ev = raw.get("eval") or {}
    if ev.get("probe", "none") == "none":
        return False
    data = raw.get("data") or {}
    name = data if isinstance(data, str) else data.get("name")
    # Digits is the one labelled dataset under 10,000 training images (its class says how many it has).
    size = ev.get("probe_train_size") or getattr(DATASETS.get(name), "n_train", 60_000)
    return size >= 10_000


def is_oom(exc: BaseException) -> bool:
    """Whether ``exc`` says the device ran out of memory."""
    return isinstance(exc, torch.cuda.OutOfMemoryError) or (
        isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()
    )


def start_or_split(build: Callable[[], Any], n: int, fitting: int) -> tuple[Any, Iterator] | int:
    """Start a fresh pack of ``n`` replicates (``build()`` gives a trainer): ``(trainer, its outputs)``,
    or the pack size to split it into: ``fitting`` when only that many replicates fit, half when it
    runs out of memory before its first output after step 0. The step-0 outputs are held back until
    then, so a pack that splits has reported nothing. Running out of memory later is raised."""
    if n > 1 and fitting < n:
        return max(1, fitting)
    trainer = outputs = None
    try:
        trainer = build()
        outputs = trainer.run()
        held = []
        for out in outputs:
            held.append(out)
            if trainer.step > 0:
                break
        return trainer, itertools.chain(held, outputs)
    except Exception as exc:
        if n == 1 or not is_oom(exc):
            raise
    # Out of the except clause, the traceback no longer holds the pack's frames: free its memory.
    trainer = outputs = None
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return max(1, n // 2)
