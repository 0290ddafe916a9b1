"""Live progress of a study for a person: trials done / total, best so far, throughput."""

from __future__ import annotations

import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


class StudyProgress:
    def __init__(self, name: str, total: int, done: int, metric: str | None, direction: str | None,
                 best: float | None = None):
        self.metric, self.direction, self.best = metric, direction, best
        self.done0 = done
        self.t0 = time.monotonic()
        self.running = 0
        self._last = 0.0
        self.progress = Progress(
            TextColumn(f"[bold]{name}[/]"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            TextColumn("{task.fields[info]}"), console=Console(stderr=True), transient=False,
        )
        self.task = self.progress.add_task("trials", total=total, completed=done, info="")

    def __enter__(self):
        self.progress.start()
        return self

    def __exit__(self, *exc):
        self.refresh(force=True)
        self.progress.stop()

    def on_result(self, trial, result) -> None:
        from mimax.trainables.tune_adapter import records_of

        for rec in records_of(result).values():
            v = rec.get(self.metric) if self.metric else None
            if v is not None and (self.best is None or (v > self.best if self.direction == "maximize" else v < self.best)):
                self.best = float(v)

    def on_end(self, trial, state: str) -> None:
        self.progress.advance(self.task)

    def refresh(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < 0.5:
            return
        self._last = now
        task = self.progress.tasks[0]
        rate = (task.completed - self.done0) / max(now - self.t0, 1e-9) * 3600
        best = "—" if self.best is None else f"{self.best:.4f}"
        self.progress.update(self.task, info=f"best {self.metric} {best} · {rate:.0f} trials/h")
