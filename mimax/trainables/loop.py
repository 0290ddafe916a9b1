"""The trainer: R ≥ 1 seed replicates of one trial config, trained and evaluated together.

No Ray, no database: ``Trainer(config)`` is a lone trial (the config's seed), ``Trainer(config, seeds)`` a
pack; ``run()`` yields lists of R records; ``save``/``load`` checkpoint the whole state, so a restored
trainer continues exactly where it stopped.

Replicate r is built under ``seeded(seeds[r])``, draws its batches with its own generator and keeps its own
evaluation streams and unstacked modules (the estimators). The modules the mode names are stacked
(``functional.Stacked``: vmapped for R > 1, the plain modules for R = 1). One fused Adam over the stacks is
R independent Adams (elementwise) on the sum of the replicates' losses, so no gradient mixes: replicate r's
records are those of its seed alone up to float rounding (the oracle: tests/reference.py). The training
mode is a strategy object (``modes.MODES``).

A replicate whose training loss turns non-finite gets its ``diverged`` record at the next read of the
losses, with the step it happened at, and leaves the summed loss, the evaluations and the records; its
slice of the stacks rides along unreported until the run ends. ``wall_s`` is shared by the replicates.
"""

from __future__ import annotations

import math
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Mapping, Sequence

import torch

from mimax.errors import ConfigError
from mimax.trainables.config import TrialConfig, resolve
from mimax.trainables.diagnostics import log_condition_numbers, percentiles
from mimax.trainables.functional import Index, Stacked, join
from mimax.trainables.init import apply_init
from mimax.trainables.modes import MODES
from mimax.trainables.probes import TorchProbe

CHECKPOINT_VERSION = 2  # 1: the separate Trainer and PackedTrainer of mimax before the single trainer
# Steps between host reads of the training losses: a read waits for the device, so reading every step
# would keep a GPU from running ahead of Python.
SYNC_EVERY = 100

Record = dict[str, Any]


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


@contextmanager
def seeded(seed: int):
    """Build models from a seed without disturbing the caller's global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def raw_config(config: Mapping[str, Any] | TrialConfig) -> dict[str, Any]:
    return config.to_dict() if isinstance(config, TrialConfig) else dict(config)


class Trainer:
    """Train and evaluate seed replicates of one trial config (default: the config's own seed).

    ``dataset(cls, params, device)`` builds the data (default: ``cls(params, device)``; a Ray worker passes
    its per-process cache, ``worker.dataset``)."""

    def __init__(self, config: Mapping[str, Any] | TrialConfig, seeds: Sequence[int] | None = None,
                 device: str | None = None, dataset: Callable[..., Any] | None = None):
        raw = raw_config(config)
        if seeds is not None:
            seeds = [int(s) for s in seeds]
            if not seeds:
                raise ValueError("a trainer needs at least one seed")
            if len(set(seeds)) != len(seeds):
                raise ValueError(f"the seeds of a pack must be distinct, got {seeds}")
            raw["seed"] = seeds[0]
        self.resolved = resolve(raw)
        self.cfg: TrialConfig = self.resolved.config  # replicate 0's
        self.seeds: list[int] = seeds or [self.cfg.seed]
        self.size = len(self.seeds)
        self.device = resolve_device(device or self.cfg.device)
        data_cls, data_params = self.resolved.data
        # read-only, shared by the replicates (and, built by a worker's cache, by its later trials)
        self.data = dataset(data_cls, data_params, self.device) if dataset else data_cls(data_params, self.device)
        mode = MODES[self.cfg.train.mode]
        built = []
        for seed in self.seeds:
            with seeded(seed):
                modules = mode.build(self.resolved, self.data.spec, self.device)
                for module in modules.values():  # in build order, from the same seeded stream
                    apply_init(module, self.cfg.init)
                built.append(modules)
        self.stacks: dict[str, Stacked] = {n: Stacked([b[n] for b in built]) for n in mode.stacked}
        self.mode = mode(self, built)
        self.probes = [(label, cls(params)) for label, cls, params in self.resolved.probes]
        self.gens = [torch.Generator(self.device).manual_seed(s) for s in self.seeds]
        self.step = 0
        self.wall_s = 0.0
        self._losses: list[list[float]] = [[] for _ in self.seeds]  # read since the last evaluation
        self._pending: list[torch.Tensor] = []  # (R,) losses not yet read from the device
        self.last_eval = -1  # step of the last evaluation yielded
        self.last_records: list[Record | None] = [None] * self.size  # kept in checkpoints, to re-report
        self.alive = [True] * self.size
        self._sel: Index = None  # the live replicates' indices, None while all live
        self._training: bool | None = None

    # ----------------------------------------------------------------- set-up
    def start_record(self, r: int = 0) -> Record:
        """What replicate r is: its parameters, config, device, the data's true MI, the estimator's ceiling."""
        return {
            "event": "start",
            "params": self.mode.param_counts(),  # one replicate's (an estimator's own only if it has any)
            "config": self.cfg.model_copy(update={"seed": self.seeds[r]}).to_dict(),
            "device": str(self.device),
            "true_mi": self.data.true_mi,
            "ceiling": self.mode.ceiling(),
            "unit": "nats",
        }

    def _set_train(self, on: bool) -> None:
        if self._training is not on:
            for module in (*self.stacks.values(), *self.mode.extras):
                module.train(on)
            self._training = on

    # --------------------------------------------------------------- training
    def descend(self, opt: torch.optim.Optimizer, losses: torch.Tensor) -> None:
        """One step of ``opt`` on the sum of the live replicates' ``losses`` (R,): each replicate's
        gradient is its own loss's."""
        opt.zero_grad(set_to_none=True)
        (losses if self._sel is None else losses[self._sel]).sum().backward()
        opt.step()

    def train_step(self) -> torch.Tensor:
        """One step of every replicate; the R training losses, on the device (reading them waits for it)."""
        if not any(self.alive):
            raise RuntimeError("every replicate has diverged")
        self._set_train(True)
        losses = self.mode.step()
        self.step += 1
        return losses

    # ------------------------------------------------------------- evaluation
    def eval_gen(self, r: int, salt: int) -> torch.Generator:
        # Evaluation draws from its own streams, so evaluating never changes the training trajectory.
        return torch.Generator(self.device).manual_seed(self.seeds[r] * 1_000_003 + self.step * 31 + salt)

    @torch.no_grad()
    def features(self, xs: list[torch.Tensor], sel: Index = None, chunk: int = 4096) -> torch.Tensor:
        """g1 of live replicate i on xs[i], (R', n, out_dim); one tensor shared by all is not copied."""
        x0 = xs[0]
        shared = all(x.data_ptr() == x0.data_ptr() and x.shape == x0.shape and x.stride() == x0.stride() for x in xs)
        g1 = self.stacks["g1"]
        out = []
        for i in range(0, len(x0), chunk):
            if shared:
                out.append(g1(x0[i : i + chunk], idx=sel, shared=True))
            else:
                out.append(g1(join([x[i : i + chunk] for x in xs]), idx=sel))
        return torch.cat(out, dim=1)

    def _probes(self, idx: list[int], sel: Index) -> dict[str, list[float]]:
        """Each probe's accuracy for each live replicate, by label; g1's features are computed once."""
        data = [self.data.probe_data(self.eval_gen(r, 3)) for r in idx]
        n = self.cfg.eval.probe_train_size  # None: t[:n] is all of t, a view
        f_tr = self.features([d[0][:n] for d in data], sel)
        f_te = self.features([d[2] for d in data], sel)
        y_tr, y_te = [d[1][:n] for d in data], [d[3] for d in data]
        same = all(torch.equal(y, y_tr[0]) for y in y_tr) and all(torch.equal(y, y_te[0]) for y in y_te)
        jobs = [(f_tr[i], y_tr[i], f_te[i], y_te[i]) for i in range(len(idx))]
        workers = min(len(jobs), torch.get_num_threads())  # the trial's CPUs (Ray sets the thread count)
        out = {}
        for label, probe in self.probes:
            if isinstance(probe, TorchProbe) and same:  # one batched fit for all replicates
                out[label] = probe.fit_score(f_tr, y_tr[0], f_te, y_te[0])
            elif workers <= 1:
                out[label] = [probe.fit_score(*job) for job in jobs]
            else:  # one fit per thread: scikit-learn's saga solver releases the GIL, and each fit is seeded
                with ThreadPoolExecutor(workers) as pool:
                    out[label] = list(pool.map(lambda job, p=probe: p.fit_score(*job), jobs))
        return out

    def _jacobian(self, idx: list[int], sel: Index) -> list[dict[str, float]]:
        b = self.cfg.eval.jacobian_batch
        x = join([self.data.eval_batches("test", b, 1, self.eval_gen(r, 4))[0][0] for r in idx])
        logc = log_condition_numbers(self.stacks["g1"], x, sel)
        return [percentiles(logc[i], prefix="log_cond") for i in range(len(idx))]

    def evaluate(self, losses: Sequence[float | None] | None = None) -> list[Record | None]:
        """One evaluation record per live replicate (None for the others); ``losses``: the mean training
        loss of each since the last evaluation (None at step 0)."""
        self._set_train(False)
        idx = [r for r in range(self.size) if self.alive[r]]
        metrics = self.mode.metrics(idx, self._sel)
        probes = self._probes(idx, self._sel) if self.probes else {}
        first = next(iter(probes.values()), [None] * len(idx))
        # A list of probes records each one's accuracy by label; probe_accuracy is the first one's.
        named = probes if isinstance(self.cfg.eval.probe, list) else {}
        jacobian = self._jacobian(idx, self._sel) if self.cfg.eval.jacobian else [{}] * len(idx)
        out: list[Record | None] = [None] * self.size
        for i, r in enumerate(idx):
            loss = self.mode.initial_loss(metrics[i]) if losses is None else losses[r]
            out[r] = {"event": "eval", "step": self.step, **metrics[i], "probe_accuracy": first[i],
                      **{f"probe_accuracy.{label}": acc[i] for label, acc in named.items()}, "loss": loss,
                      **jacobian[i], "wall_s": self.wall_s}
        return out

    # -------------------------------------------------------------------- run
    def _remember(self, records: list[Record | None]) -> list[Record | None]:
        self.last_records = [new or old for new, old in zip(records, self.last_records)]
        return records

    def run(self) -> Iterator[list[Record | None]]:
        """Yield lists of R records: at step 0 (unless resumed past it), every ``eval.every`` steps and at
        the last step; and at the next read of the losses after a replicate's loss turned non-finite, its
        ``diverged`` record (in the evaluation's list when that read is an evaluation). Entry r is None
        when replicate r has nothing new. Stops when every replicate has stopped."""
        every, steps = self.cfg.eval.every, self.cfg.train.steps
        t0 = time.perf_counter() - self.wall_s
        if self.last_eval < 0:
            self.last_eval = 0
            yield self._remember(self.evaluate())
        while self.step < steps and any(self.alive):
            self._pending.append(self.train_step())
            self.wall_s = time.perf_counter() - t0
            at_eval = self.step % every == 0 or self.step == steps
            if not at_eval and self.step % SYNC_EVERY:
                continue
            out = self._drain()
            if at_eval and any(self.alive):
                means = [sum(ls) / len(ls) if ls else None for ls in self._losses]
                self._losses = [[] for _ in self.seeds]
                self.last_eval = self.step
                recs = self.evaluate(means)
                self.wall_s = time.perf_counter() - t0
                out = [o or rec for o, rec in zip(out, recs)]
            if any(o is not None for o in out):
                yield self._remember(out)

    def _drain(self) -> list[Record | None]:
        """Read the losses of the steps since the last read (one wait for the device, not one per step).
        A replicate whose loss turned non-finite stops: its ``diverged`` record, with the step it happened
        at. (Until the read it trained on; its gradients are its own, so the others are untouched.)"""
        rows = torch.stack(self._pending).tolist() if self._pending else []
        first = self.step - len(rows) + 1
        self._pending = []
        out: list[Record | None] = [None] * self.size
        for i, row in enumerate(rows):
            for r, loss in enumerate(row):
                if not self.alive[r]:
                    continue
                if math.isfinite(loss):
                    self._losses[r].append(loss)
                    continue
                self.alive[r] = False
                out[r] = {"event": "diverged", "step": first + i, "loss": None, "reason": f"training loss is {loss}",
                          "wall_s": self.wall_s}
        self._select()
        return out

    def _select(self) -> None:
        live = [r for r in range(self.size) if self.alive[r]]
        self._sel = None if len(live) == self.size else torch.tensor(live, device=self.device)

    # ------------------------------------------------------------- checkpoint
    def _base_config(self) -> dict[str, Any]:
        return {k: v for k, v in self.cfg.to_dict().items() if k != "seed"}

    def state_dict(self) -> dict[str, Any]:
        assert not self._pending, "checkpoint between host reads of the losses"
        return {
            "version": CHECKPOINT_VERSION,
            "config": self._base_config(),
            "seeds": list(self.seeds),
            "step": self.step,
            "wall_s": self.wall_s,
            "losses": [list(ls) for ls in self._losses],
            "last_eval": self.last_eval,
            "last_records": list(self.last_records),
            "alive": list(self.alive),
            "modules": {n: s.state_dict() for n, s in self.stacks.items()},
            "mode": self.mode.state_dict(),
            "optimisers": [opt.state_dict() for opt in self.mode.optimisers],
            "gens": [g.get_state() for g in self.gens],
        }

    def load_state_dict(self, state: Any) -> None:
        """Continue from a checkpoint of this config and these seeds (this version's, or version 1's)."""
        version = state.get("version") if isinstance(state, dict) else None
        if version == 1:
            state = self._upgrade(state)
        elif version != CHECKPOINT_VERSION:
            raise ConfigError("checkpoint", "is not a mimax trainer checkpoint" if version is None else
                              f"has version {version!r}; this mimax reads versions 1 and {CHECKPOINT_VERSION}")
        if state["config"] != self._base_config():
            raise ConfigError("checkpoint", "was written by a different trial config")
        if list(state["seeds"]) != self.seeds:
            raise ConfigError("checkpoint", f"was written for seeds {state['seeds']}, not {self.seeds}")
        for n, s in self.stacks.items():
            s.load_state_dict(state["modules"][n])
        self.mode.load_state_dict(state["mode"])
        for opt, saved in zip(self.mode.optimisers, state["optimisers"]):
            # The hyperparameters are the config's (and fused); a checkpoint brings the moments, and TF1's
            # step count where the config asks for TF1's ε (optim.tf1_epsilon).
            groups = [{**ours, **{k: theirs[k] for k in ("tf1_step",) if k in theirs and k in ours},
                       "params": theirs["params"]}
                      for ours, theirs in zip(opt.state_dict()["param_groups"], saved["param_groups"])]
            opt.load_state_dict({"state": saved["state"], "param_groups": groups})
        for g, gs in zip(self.gens, state["gens"]):
            g.set_state(gs)
        self.step, self.wall_s, self.last_eval = state["step"], state["wall_s"], state["last_eval"]
        self._losses = [list(ls) for ls in state["losses"]]
        self.last_records = list(state["last_records"])
        self.alive = list(state["alive"])
        self._select()

    def _upgrade(self, old: dict[str, Any]) -> dict[str, Any]:
        """A version-1 checkpoint in this version's terms. A pack's (``PackedTrainer``) stored its stacks as
        this trainer does; a lone ``Trainer``'s held plain modules, which a stack of one is."""
        if old.get("kind") == "pack":
            if len(old["seeds"]) == 1:
                raise ConfigError("checkpoint", "is a version-1 pack of one seed, which this mimax cannot "
                                                "continue; start the trial again")
            return {**old, "mode": {"estimators": old["estimators"], "warm": old["warm"]},
                    "optimisers": [o for o in (old["opt"], old["cls_opt"]) if o is not None]}
        config = dict(old["config"])
        modules = old["modules"]
        lifted = {}
        for n, s in self.stacks.items():
            params, _ = s.tensors()
            lifted[n] = {"params": {k: v[None] for k, v in modules[n].items() if k in params},
                         "buffers": {k: v[None] for k, v in modules[n].items() if k not in params}}
        return {
            **old, "config": {k: v for k, v in config.items() if k != "seed"}, "seeds": [config.get("seed")],
            "losses": [old["losses"]], "last_records": [old["last_record"]], "alive": [True], "modules": lifted,
            "mode": {"estimators": [modules.get("estimator")], "warm": old["warm"]},
            "optimisers": [o for o in (old["opt"], old["cls_opt"]) if o is not None], "gens": [old["gen"]],
        }

    def save(self, path) -> None:
        torch.save(self.state_dict(), path)

    def load(self, path) -> None:
        """``load_state_dict`` of the file at ``path``; a file that is no checkpoint of this trial is a
        ConfigError naming it."""
        try:
            state = torch.load(path, map_location=self.device, weights_only=False)
        except Exception as exc:  # noqa: BLE001 - any unreadable file is bad input
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise ConfigError(str(path), f"is not a mimax checkpoint ({first})") from None
        try:
            self.load_state_dict(state)
        except ConfigError as exc:
            raise ConfigError(str(path), exc.message) from None
