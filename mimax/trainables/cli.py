"""``mimax train``: one trial in the foreground, with a progress bar or JSON lines.

Registering the command imports no torch: that waits until a trial runs."""

from __future__ import annotations

import contextlib
import json
import os
import time

from mimax.contract import ceiling_label, json_safe, load_yaml
from mimax.errors import ConfigError


def register(subparsers) -> None:
    """Add the ``train`` command to the main CLI's subparsers."""
    p = subparsers.add_parser("train", help="train one trial from a YAML config")
    p.add_argument("config", help="trial config (YAML)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set encoder.name=convnet (repeatable)")
    p.add_argument("--json", action="store_true", help="print only JSON lines on stdout")
    p.add_argument("--checkpoint", metavar="PATH",
                   help="save a checkpoint after every evaluation; continue from it if it exists")
    p.set_defaults(func=train_command)


def emit_json(record: dict) -> None:
    print(json.dumps(json_safe(record), allow_nan=False), flush=True)


def _fmt(v, spec=".4f"):
    return "—" if v is None else format(v, spec)


def _check_checkpoint(path: str) -> None:
    """A checkpoint path that can be read (if it exists) and written, checked before training starts."""
    folder = os.path.dirname(os.path.abspath(path)) if path else ""
    if not path or os.path.isdir(path):
        raise ConfigError("--checkpoint", f"expected a file path, got {path!r}")
    if not os.path.isdir(folder):
        raise ConfigError("--checkpoint", f"no folder {folder} to write {os.path.basename(path)!r} in")
    try:
        os.stat(path)
    except FileNotFoundError:
        pass
    except (OSError, ValueError) as exc:  # a name too long for the file system, say
        raise ConfigError("--checkpoint", f"cannot use {path!r}: {getattr(exc, 'strerror', None) or exc}") from None


def train_command(args) -> int:
    from mimax.trainables.config import apply_overrides, validate

    raw = load_yaml(args.config, "config")
    if not isinstance(raw, dict):
        raise ConfigError("", f"{args.config}: a trial config must be a mapping")
    raw = apply_overrides(raw, args.overrides)
    validate(raw)  # bad input fails here, before any data is loaded
    if args.checkpoint is not None:
        _check_checkpoint(args.checkpoint)
    from mimax.trainables.loop import Trainer

    trainer = Trainer(raw)
    if args.checkpoint and os.path.exists(args.checkpoint):
        try:
            trainer.load(args.checkpoint)
        except ConfigError as exc:
            raise ConfigError("--checkpoint", f"{args.checkpoint} {exc.message}") from None
    start = trainer.start_record()
    t0 = time.perf_counter()
    records = []
    if args.json:
        emit_json(start)
    with contextlib.nullcontext(emit_json) if args.json else _progress(trainer, start) as show:
        for (rec,) in trainer.run():
            records.append(rec)
            show(rec)
            if rec["event"] == "eval" and args.checkpoint:  # never checkpoint the weights of a diverged run
                tmp = args.checkpoint + ".tmp"
                trainer.save(tmp)
                os.replace(tmp, args.checkpoint)  # never leave a half-written checkpoint
    end = {
        "event": "end",
        "step": trainer.step,
        "wall_s": time.perf_counter() - t0,
        "status": "diverged" if records and records[-1]["event"] == "diverged" else "completed",
        "final": records[-1] if records else None,
    }
    if args.json:
        emit_json(end)
    else:
        _summary(start, records, end)
    return 0


@contextlib.contextmanager
def _progress(trainer, start):
    """A progress bar on stderr; yields what to call with each record."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    console = Console(stderr=True)
    cfg = trainer.cfg
    console.print(
        f"[bold]mimax train[/] {cfg.encoder['name']} × {cfg.critic['name'] if cfg.critic else '—'} × "
        f"{cfg.estimator['name'] if cfg.estimator else cfg.train.mode} on {cfg.data['name']} "
        f"({start['device']}); parameters {start['params']}"
    )
    columns = [TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
               TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[last]}")]
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task("steps", total=cfg.train.steps, completed=trainer.step, last="")

        def show(rec):
            last = f"bound {_fmt(rec.get('bound_train'))} acc {_fmt(rec.get('probe_accuracy'))}"
            progress.update(task, completed=trainer.step, last=last)

        yield show


def _summary(start, records, end):
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{end['status']} after {end['step']} steps in {end['wall_s']:.1f} s")
    for col in ("step", "loss", "bound_train", "bound_test", "probe_accuracy"):
        table.add_column(col, justify="right")
    for r in records:
        if r["event"] == "eval":
            table.add_row(str(r["step"]), _fmt(r["loss"]), _fmt(r["bound_train"]), _fmt(r["bound_test"]),
                          _fmt(r["probe_accuracy"]))
    console = Console()
    console.print(table)
    extra = []
    if start.get("ceiling") is not None:
        k = start["config"]["train"]["batch_size"]
        extra.append(f"ceiling {ceiling_label(start['ceiling'], k, digits=4, unit='nats')}")
    if start.get("true_mi") is not None:
        extra.append(f"true MI = {start['true_mi']:.4f} nats")
    if extra:
        console.print("; ".join(extra))
