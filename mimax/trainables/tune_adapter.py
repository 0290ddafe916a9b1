"""A thin Ray Tune adapter around the training loop: report every evaluation with a checkpoint.

One Ray trial trains a *pack*: one or more seed replicates of one configuration, in one ``Trainer``.
Its Ray config is ``{"pack_key", "trial" (trial config without seed), "members": [{"trial_key", "seed"}],
"resume_from"}``. Each result carries ``records`` = {trial_key: evaluation record} for the members with
something new, plus the members' mean of each metric at top level (what a scheduler compares), and
what the pack is: ``params.*`` (one replicate's parameter counts), ``ceiling`` (the estimator's largest
value at the batch size, e.g. log K, or None) and ``true_mi`` (the data's analytic MI, or None).

A trial restored from a checkpoint (Ray's own restore, or ``resume_from`` given by ``mimax resume``)
re-reports the records stored in that checkpoint first: writes are idempotent on (trial, step), and
this closes the gap when the driver died between a checkpoint and its database write.

A worker process runs trial after trial (``mimax.trainables.worker``): each trial starts from the
process state of a fresh worker, and a dataset is loaded once per process.

A fresh pack that does not fit its device (``memory.start_or_split``: by ``fitting_pack_size``, or a
real out-of-memory error before its first evaluation after step 0) trains nothing: it reports one
result without records, ``{"pack_split": size, "records": {}}``, and the searcher runs its members
again in packs of ``size``.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from mimax.contract import MEAN_KEYS

CHECKPOINT_FILE = "trainer.pt"
META_FILE = "meta.json"


def read_meta(checkpoint_dir: str | os.PathLike) -> dict[str, Any] | None:
    try:
        return json.loads((Path(checkpoint_dir) / META_FILE).read_text())
    except (OSError, ValueError):
        return None


def records_of(result: dict[str, Any] | None) -> dict[str, dict]:
    """The per-member records of a result, whether Ray passed it nested or flattened ("records/KEY/x")."""
    if not result:
        return {}
    if isinstance(result.get("records"), dict):
        return result["records"]
    out: dict[str, dict] = {}
    for name, value in result.items():
        if name.startswith("records/"):
            _, key, field = name.split("/", 2)
            out.setdefault(key, {})[field] = value
    return out


def summary(records: dict[str, dict], step: int) -> dict[str, Any]:
    """Top-level metrics of a pack's result: the members' mean, where every member has a value."""
    evals = [r for r in records.values() if r.get("event") == "eval"]
    out: dict[str, Any] = {"step": step, "event": "eval" if evals else "diverged"}
    for key in MEAN_KEYS:
        values = [r.get(key) for r in evals]
        if values and all(v is not None for v in values):
            out[key] = sum(values) / len(values)
    return out


def _gpu_share(ctx, device: str) -> float:
    """The trial's share of its GPU (Ray gives whole GPUs above 1); all of the memory on CPU."""
    if device != "cuda":
        return 1.0
    return min(1.0, float(ctx.get_assigned_resources().get("GPU") or 1.0))


def tune_trial(config: dict[str, Any]) -> None:
    import ray
    from ray import tune

    from mimax.trainables import worker
    from mimax.trainables.loop import Trainer
    from mimax.trainables.memory import fitting_pack_size, start_or_split

    members = config["members"]
    keys = [m["trial_key"] for m in members]
    seeds = [m["seed"] for m in members]
    worker.fresh(seeds[0])  # this process may have run other trials before (Tune's actor reuse)
    device = "cuda" if ray.get_gpu_ids() else "cpu"  # CPU-only trials never touch a GPU
    ctx = ray.get_runtime_context()
    where = {"node_id": ctx.get_node_id(), "node_ip": ray.util.get_node_ip_address(), "device": device,
             "pack_size": len(members), "pid": os.getpid()}

    def build() -> Trainer:
        return Trainer(config["trial"], seeds, device=device, dataset=worker.dataset)

    restored = tune.get_checkpoint()
    replay: dict[str, dict] = {}
    if restored is None and not config.get("resume_from") and len(members) > 1:
        # The driver sized the pack from its own view of memory: check it on the trial's device.
        fitting = fitting_pack_size(config["trial"], len(members), device, share=_gpu_share(ctx, device))
        started = start_or_split(build, len(members), fitting)
        if isinstance(started, int):
            tune.report({**where, "pack_split": started, "records": {}})
            return
        trainer, outputs = started
    else:
        trainer = build()
        if restored is not None:
            with restored.as_directory() as d:
                trainer.load(Path(d) / CHECKPOINT_FILE)
        elif config.get("resume_from"):
            trainer.load(Path(config["resume_from"]) / CHECKPOINT_FILE)
        replay = {k: r for k, r in zip(keys, trainer.last_records) if r is not None and r.get("event") == "eval"}
        outputs = trainer.run()
    start = trainer.start_record()
    where.update({f"params.{k}": v for k, v in start["params"].items()})
    where.update(ceiling=start["ceiling"], true_mi=start["true_mi"])
    if replay:
        step = max(r["step"] for r in replay.values())
        tune.report({**summary(replay, step), **where, "records": replay, "replayed": True})

    for out in outputs:
        records = {k: r for k, r in zip(keys, out) if r is not None}
        step = max(r["step"] for r in records.values())
        metrics = {**summary(records, step), **where, "records": records, "replayed": False}
        # Only divergences are worth no checkpoint; nor are held-back step-0 records (the pack is past them).
        if step != trainer.step or not any(r["event"] == "eval" for r in records.values()):
            tune.report(metrics)
            continue
        with tempfile.TemporaryDirectory() as d:
            trainer.save(Path(d) / CHECKPOINT_FILE)
            meta = {"pack_key": config["pack_key"], "trial_keys": keys, "step": trainer.step}
            Path(d, META_FILE).write_text(json.dumps(meta))
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(d))


def null_trial(config: dict[str, Any]) -> None:
    """A test trainable for measuring the driver (``mimax launch --trainable null``, docs/STUDIES.md): it
    reports what ``tune_trial`` reports, a record per member at step 0, every ``eval.every`` steps and at
    ``train.steps``, each result with a (tiny) checkpoint, and resumes from one, but builds and trains nothing.
    Its bounds are made up from the learning rate, the step and the seed; no torch is imported."""
    import math

    from ray import tune

    trial, members = config["trial"], config["members"]
    steps, every = trial["train"]["steps"], trial["eval"]["every"]
    k, lr = trial["train"].get("batch_size", 128), trial["train"].get("lr", 1e-4)
    where = {"pack_size": len(members), "pid": os.getpid(), "ceiling": None, "true_mi": None, "params.g1": 0}
    start = 0  # a checkpoint's step is reported again, as tune_trial replays its checkpoint's records
    restored = tune.get_checkpoint()
    if restored is not None:
        with restored.as_directory() as d:
            start = read_meta(d)["step"]
    elif config.get("resume_from"):
        start = read_meta(config["resume_from"])["step"]
    for step in sorted({*range(0, steps + 1, every), steps}):
        if step < start:
            continue
        records = {}
        for m in members:
            bound = math.log(k) * (1 - math.exp(-10 * lr * step)) + 1e-3 * (m["seed"] % 7)
            records[m["trial_key"]] = {"event": "eval", "step": step, "bound_train": bound, "bound_test": bound,
                                       "probe_accuracy": None, "loss": -bound, "wall_s": 0.0}
        with tempfile.TemporaryDirectory() as d:
            Path(d, CHECKPOINT_FILE).write_text(json.dumps({"step": step}))
            meta = {"pack_key": config["pack_key"], "trial_keys": [m["trial_key"] for m in members], "step": step}
            Path(d, META_FILE).write_text(json.dumps(meta))
            tune.report({**summary(records, step), **where, "records": records, "replayed": False},
                        checkpoint=tune.Checkpoint.from_directory(d))
