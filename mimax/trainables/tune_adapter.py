"""A thin Ray Tune adapter around the training loop: report every evaluation with a checkpoint.

The trial's Ray config is ``{"trial_key", "trial" (trial config without seed), "seed", "resume_from"}``.
A trial restored from a checkpoint (Ray's own restore, or ``resume_from`` given by ``mimax resume``)
re-reports the evaluation stored in that checkpoint first: writes are idempotent on (trial, step), and
this closes the gap when the driver died between a checkpoint and its database write.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

CHECKPOINT_FILE = "trainer.pt"
META_FILE = "meta.json"


def flat_metrics(record: dict[str, Any], params: dict[str, int]) -> dict[str, Any]:
    out = dict(record)
    out.update({f"params.{k}": v for k, v in params.items()})
    return out


def read_meta(checkpoint_dir: str | os.PathLike) -> dict[str, Any] | None:
    try:
        return json.loads((Path(checkpoint_dir) / META_FILE).read_text())
    except (OSError, ValueError):
        return None


def tune_trial(config: dict[str, Any]) -> None:
    import ray
    from ray import tune

    from mimax.trainables.loop import Trainer

    device = "cuda" if ray.get_gpu_ids() else "cpu"  # CPU-only trials never touch a GPU
    trainer = Trainer(dict(config["trial"], seed=config["seed"]), device=device)
    params = trainer.param_counts()
    ctx = ray.get_runtime_context()
    where = {"node_id": ctx.get_node_id(), "node_ip": ray.util.get_node_ip_address(), "device": device}

    restored = tune.get_checkpoint()
    if restored is not None:
        with restored.as_directory() as d:
            trainer.load(Path(d) / CHECKPOINT_FILE)
    elif config.get("resume_from"):
        trainer.load(Path(config["resume_from"]) / CHECKPOINT_FILE)
    if trainer.last_record is not None and trainer.last_record.get("event") == "eval":
        tune.report({**flat_metrics(trainer.last_record, params), **where, "replayed": True})

    for record in trainer.run():
        metrics = {**flat_metrics(record, params), **where, "replayed": False}
        if record["event"] != "eval":  # diverged: the step is recorded, nothing to resume from
            tune.report(metrics)
            return
        with tempfile.TemporaryDirectory() as d:
            trainer.save(Path(d) / CHECKPOINT_FILE)
            Path(d, META_FILE).write_text(json.dumps({"trial_key": config["trial_key"], "step": trainer.step}))
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(d))
