"""Live progress of a study for a person: trials done / total, best so far, throughput.

On a terminal it is one live bar. Elsewhere (a file, a pipe) a bar cannot redraw itself and would come
out cut to a fixed width, so each change (a trial ended, a better value) is one plain line instead.
"""

from __future__ import annotations

import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


class StudyProgress:
    def __init__(self, name: str, total: int, done: int, metric: str | None, direction: str | None,
                 best: float | None = None, console: Console | None = None):
        self.name, self.total, self.done = name, total, done
        self.metric, self.direction, self.best = metric, direction, best
        self.done0 = done
        self.t0 = time.monotonic()
        self._last = 0.0
        self.console = console or Console(stderr=True)
        self.live = self.console.is_terminal
        self.progress = Progress(
            TextColumn(f"[bold]{name}[/]"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            TextColumn("{task.fields[info]}"), console=self.console, transient=False,
        )
        self.task = self.progress.add_task("trials", total=total, completed=done, info="")

    def __enter__(self):
        if self.live:
            self.progress.start()
        else:
            self._line()
        return self

    def __exit__(self, *exc):
        self.refresh(force=True)
        if self.live:
            self.progress.stop()

    def on_result(self, trial, result) -> None:
        from mimax.trainables.tune_adapter import records_of

        for rec in records_of(result).values():
            v = rec.get(self.metric) if self.metric else None
            if v is not None and (self.best is None or (v > self.best if self.direction == "maximize" else v < self.best)):
                self.best = float(v)
                if not self.live:
                    self._line()

    def on_end(self, trial, state: str) -> None:
        self.done += 1
        self.progress.advance(self.task)
        if not self.live:
            self._line()

    def _info(self) -> str:
        rate = (self.done - self.done0) / max(time.monotonic() - self.t0, 1e-9) * 3600
        best = "—" if self.best is None else f"{self.best:.4f}"
        return f"best {self.metric} {best} · {rate:.0f} trials/h"

    def _line(self) -> None:
        elapsed = time.strftime("%H:%M:%S", time.gmtime(time.monotonic() - self.t0))
        print(f"{self.name}: {self.done}/{self.total} trials · {elapsed} · {self._info()}",
              file=self.console.file, flush=True)

    def refresh(self, force: bool = False) -> None:
        now = time.monotonic()
        if not self.live or (not force and now - self._last < 0.5):
            return
        self._last = now
        self.progress.update(self.task, info=self._info())
