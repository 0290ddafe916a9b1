"""R seed replicates of one trial config trained at once, each exactly as ``Trainer`` would train it alone.

``PackedTrainer(config, seeds)`` builds replicate r's modules under ``seeded(seeds[r])`` as ``Trainer``
does, then stacks them (``functional.Stacked``): the encoders and the critic run once for all R
replicates under ``torch.vmap``. Each replicate keeps its own data stream (a generator seeded like
``Trainer``'s, drawing batches in the same order), its own evaluation streams and its own estimator
module (MINE's moving average, TUBA's baseline), evaluated in a short Python loop on the vmapped
scores. One Adam over the stacked tensors is R independent Adams (Adam is elementwise; ours is the
fused implementation, which rounds within an ulp of ``Trainer``'s), and the loss is the sum of the
replicates' losses, so no gradient mixes. Replicate r's records therefore equal those of its seed
trained alone up to float rounding (tests/trainables/test_packed.py); ``replicate_state_dict(r)``
exports it as a ``Trainer`` checkpoint. Evaluation is batched too: the bounds,
the ``torch`` probe (``functional.fit_torch_probes``, one solve for R) and the Jacobian diagnostic.

``run()`` yields lists of R entries, entry r being replicate r's record (same keys and values as
``Trainer``'s) or None. A replicate whose training loss turns non-finite gets its ``diverged`` record
(yielded at once, at that step) and is dropped from the summed loss, the evaluations and the records;
its slice of the stacked tensors still rides along until the pack ends (computed, and moved by Adam's
momentum, but never evaluated or reported; the others' numbers are untouched). ``wall_s`` is the
pack's time, shared by its replicates.

``auto_pack_size`` sizes a pack from free memory (``fitting_pack_size``: memory alone); ``train_packs``
runs seeds in packs and halves the pack size when a pack runs out of memory before it has reported
anything past step 0.
"""

from __future__ import annotations

import gc
import math
import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Iterator, Mapping, Sequence

import torch
from torch import nn

from mimax.errors import ConfigError
from mimax.trainables.data import DATASETS
from mimax.trainables.config import Resolved, TrialConfig, resolve
from mimax.trainables.diagnostics import percentiles
from mimax.trainables.functional import Stacked, fit_torch_probes, stacked_log_condition_numbers
from mimax.trainables.loop import CHECKPOINT_VERSION, SYNC_EVERY, resolve_device, seeded
from mimax.trainables.probes import TorchProbe
from mimax.trainables.speed import build_forward, stateless

PACK_CHECKPOINT_VERSION = 1


def _raw(config: Mapping[str, Any] | TrialConfig) -> dict[str, Any]:
    return config.to_dict() if isinstance(config, TrialConfig) else dict(config)


def build_modules(resolved: Resolved, view, device) -> dict[str, nn.Module]:
    """One replicate's modules, built from the current torch RNG in ``Trainer``'s order."""
    cfg = resolved.config
    enc_cls, enc_params = resolved.encoder
    out: dict[str, nn.Module] = {"g1": enc_cls(enc_params, view).to(device)}
    if cfg.train.mode == "infomax":
        out["g2"] = enc_cls(enc_params, view).to(device)
        crit_cls, crit_params = resolved.critic
        est_cls, est_params = resolved.estimator
        out["critic"] = crit_cls(crit_params, out["g1"].out_dim, out["g2"].out_dim).to(device)
        out["estimator"] = est_cls(est_params).to(device)
    else:
        n_classes = resolved.data[0].n_classes
        out["classifier"] = nn.Linear(out["g1"].out_dim, n_classes).to(device)
    return out


class PackedTrainer:
    """Train and evaluate R replicates of one trial config (seeds ``seeds``) together."""

    def __init__(self, config: Mapping[str, Any] | TrialConfig, seeds: Sequence[int], device: str | None = None):
        seeds = [int(s) for s in seeds]
        if not seeds:
            raise ValueError("a pack needs at least one seed")
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"the seeds of a pack must be distinct, got {seeds}")
        raw = _raw(config)
        self.resolved = [resolve(dict(raw, seed=s)) for s in seeds]
        self.configs: list[TrialConfig] = [r.config for r in self.resolved]
        cfg = self.cfg = self.configs[0]
        self.seeds = seeds
        self.size = len(seeds)
        self.device = resolve_device(device or cfg.device)
        data_cls, data_params = self.resolved[0].data
        self.data = data_cls(data_params, self.device)  # read-only, shared by the replicates
        self.infomax = cfg.train.mode == "infomax"
        built = []
        for res, seed in zip(self.resolved, seeds):
            with seeded(seed):
                built.append(build_modules(res, self.data.spec, self.device))
        stack = lambda name: Stacked([b[name] for b in built]) if name in built[0] else None  # noqa: E731
        self.g1, self.g2, self.critic, self.classifier = stack("g1"), stack("g2"), stack("critic"), stack("classifier")
        # Estimators stay one module per replicate: some hold state, some index with masks vmap refuses.
        self.estimators: list[nn.Module] | None = [b["estimator"] for b in built] if self.infomax else None
        del built
        # A stateless estimator (no parameters, no buffers) is one function of the scores: vmapped over the
        # pack it is a few kernels instead of R times as many, which a GPU spends launching.
        self._stateless = self.infomax and all(stateless(e) for e in self.estimators)
        self._forward, self.vmapped = None, False
        if self.infomax:
            self.set_vmap(self._stateless)
        self.probe = None
        if self.resolved[0].probe is not None:
            p_cls, p_params = self.resolved[0].probe
            self.probe = p_cls(p_params)
        self._build_optimisers()
        self.gens = [torch.Generator(self.device).manual_seed(s) for s in seeds]
        self.step = 0
        self.wall_s = 0.0
        self._losses: list[list[float]] = [[] for _ in seeds]
        self._pending: list[torch.Tensor] = []  # (R,) losses not yet read from the device
        self.last_eval = -1
        self.last_records: list[dict[str, Any] | None] = [None] * self.size
        self.alive = [True] * self.size
        self._warm = False
        self._probe_arrays = None

    # ----------------------------------------------------------------- set-up
    def set_vmap(self, on: bool) -> None:
        """Compute the R losses with one vmapped estimator (``on``, stateless estimators only) or one
        estimator call per replicate."""
        if on and not self._stateless:
            raise ValueError("a stateful estimator cannot be vmapped over the pack")
        self.vmapped = on
        if on:
            est = self.estimators[0]
            losses = torch.vmap(lambda scores: est.loss(est(scores)))
        else:
            losses = lambda scores: torch.stack(  # noqa: E731
                [est.loss(est(scores[r])) for r, est in enumerate(self.estimators)])
        self._forward = build_forward(lambda x1, x2: self.critic(self.g1(x1), self.g2(x2)), losses,
                                      self.cfg.train, self.device, self._stateless)

    def _build_optimisers(self):
        # Fused Adam: the same update in one pass over the (R×) larger tensors, where the per-op
        # implementation is bound by memory traffic (5× slower on CPU for an 8-pack of MLPs); it rounds
        # within an ulp of Trainer's. It assumes a parameter, its gradient and its moments share one
        # layout (it silently miscomputes otherwise): the stacks keep every leaf contiguous.
        adam = dict(betas=(0.9, 0.999), eps=1e-8, fused=True)
        if self.infomax:
            params = self.g1.parameters() + self.g2.parameters() + self.critic.parameters()
            params += [p for e in self.estimators for p in e.parameters()]
            self.opt = torch.optim.Adam(params, lr=self.cfg.train.lr, **adam)
            self.cls_opt = None
        else:
            adv = self.cfg.adversarial
            self.opt = torch.optim.Adam(self.g1.parameters(), lr=adv.encoder_lr, **adam)
            self.cls_opt = torch.optim.Adam(self.classifier.parameters(), lr=adv.classifier_lr, **adam)

    def _stacks(self) -> dict[str, Stacked]:
        names = ("g1", "g2", "critic", "classifier")
        return {n: getattr(self, n) for n in names if getattr(self, n) is not None}

    def param_counts(self) -> dict[str, int]:
        """Parameters of one replicate, as ``Trainer.param_counts``."""
        count = lambda s: 0 if s is None else s.n_params()  # noqa: E731
        out = {"g1": count(self.g1), "g2": count(self.g2), "critic": count(self.critic)}
        n_est = 0 if self.estimators is None else sum(p.numel() for p in self.estimators[0].parameters())
        if n_est:
            out["estimator"] = n_est
        if self.classifier is not None:
            out["classifier"] = count(self.classifier)
        return out

    def start_record(self) -> list[dict[str, Any]]:
        """One ``Trainer.start_record`` per replicate."""
        ceiling = None if self.estimators is None else self.estimators[0].ceiling(self.cfg.train.batch_size)
        return [
            {
                "event": "start",
                "params": self.param_counts(),
                "config": c.to_dict(),
                "device": str(self.device),
                "true_mi": self.data.true_mi,
                "ceiling": ceiling,
                "unit": "nats",
            }
            for c in self.configs
        ]

    def _set_train(self, mode: bool):
        for s in self._stacks().values():
            s.train(mode)
        for e in self.estimators or []:
            e.train(mode)

    def _alive_index(self) -> tuple[list[int], torch.Tensor | None]:
        idx = [r for r in range(self.size) if self.alive[r]]
        return idx, None if len(idx) == self.size else torch.tensor(idx, device=self.device)

    def _total(self, losses: list[torch.Tensor] | torch.Tensor) -> torch.Tensor:
        """Sum of the live replicates' losses: each replicate's gradient is its own loss's gradient."""
        if isinstance(losses, torch.Tensor):
            _, sel = self._alive_index()
            return (losses if sel is None else losses[sel]).sum()
        return sum(loss for loss, alive in zip(losses, self.alive) if alive)

    # --------------------------------------------------------------- training
    def _infomax_step(self) -> torch.Tensor:
        k = self.cfg.train.batch_size
        pairs = [self.data.train_batch(k, g) for g in self.gens]
        x1 = torch.stack([p[0] for p in pairs])
        x2 = torch.stack([p[1] for p in pairs])
        losses = self._forward(x1, x2)  # (R,), from the (R, K, K) scores
        self.opt.zero_grad(set_to_none=True)
        self._total(losses).backward()
        self.opt.step()
        return losses.detach()

    def _labelled_train(self):
        if self._probe_arrays is None:
            self._probe_arrays = [
                self.data.probe_data(torch.Generator(self.device).manual_seed(s + 7919)) for s in self.seeds
            ]
        return self._probe_arrays

    def _labelled_batch(self, with_labels: bool):
        k = self.cfg.train.batch_size
        xs, ys = [], []
        for (x, y, _, _), g in zip(self._labelled_train(), self.gens):
            idx = torch.randint(len(y), (k,), generator=g, device=self.device)
            xs.append(x[idx])
            ys.append(y[idx])
        return torch.stack(xs), (torch.stack(ys) if with_labels else None)

    def _classifier_step(self) -> None:
        x, y = self._labelled_batch(True)
        with torch.no_grad():
            feats = self.g1(x)
        logits = self.classifier(feats)
        losses = [nn.functional.cross_entropy(logits[r], y[r]) for r in range(self.size)]
        self.cls_opt.zero_grad(set_to_none=True)
        self._total(losses).backward()
        self.cls_opt.step()

    def _encoder_step(self) -> torch.Tensor:
        x, _ = self._labelled_batch(False)
        logp = torch.log_softmax(self.classifier(self.g1(x)), dim=-1)
        losses = [-logp[r].mean() for r in range(self.size)]  # cross-entropy to the uniform distribution
        self.opt.zero_grad(set_to_none=True)
        self._total(losses).backward()
        self.opt.step()
        return torch.stack([loss.detach() for loss in losses])

    def _adversarial_round(self) -> torch.Tensor:
        adv = self.cfg.adversarial
        if not self._warm:
            for _ in range(adv.warmup):
                self._classifier_step()
            self._warm = True
        for _ in range(adv.classifier_steps):
            self._classifier_step()
        return self._encoder_step()

    def train_step(self) -> torch.Tensor:
        """One step of every replicate; returns the R training losses, on the device."""
        if not any(self.alive):
            raise RuntimeError("every replicate of this pack has diverged")
        self._set_train(True)
        losses = self._infomax_step() if self.infomax else self._adversarial_round()
        self.step += 1
        return losses

    # ------------------------------------------------------------- evaluation
    def _eval_gen(self, r: int, salt: int) -> torch.Generator:
        seed = self.seeds[r] * 1_000_003 + self.step * 31 + salt  # Trainer._eval_gen for replicate r
        return torch.Generator(self.device).manual_seed(seed)

    @torch.no_grad()
    def _bounds(self, split: str, idx: list[int], sel) -> list[float]:
        k, n = self.cfg.train.batch_size, self.cfg.eval.bound_batches
        per = [self.data.eval_batches(split, k, n, self._eval_gen(r, 1 + (split == "test"))) for r in idx]
        rows = []
        for b in range(n):
            x1 = torch.stack([batches[b][0] for batches in per])
            x2 = torch.stack([batches[b][1] for batches in per])
            scores = self.critic(self.g1(x1, idx=sel), self.g2(x2, idx=sel), idx=sel)
            rows.append(torch.stack([self.estimators[r](scores[i]).value for i, r in enumerate(idx)]))
        table = torch.stack(rows).tolist()  # (n, R'): one transfer
        return [sum(row[i] for row in table) / n for i in range(len(idx))]

    @torch.no_grad()
    def _features(self, xs: list[torch.Tensor], sel, chunk: int = 4096) -> torch.Tensor:
        """g1 of replicate i on xs[i], (R', n, out_dim); inputs that are one tensor are not copied R times."""
        x0 = xs[0]
        shared = all(x.data_ptr() == x0.data_ptr() and x.shape == x0.shape and x.stride() == x0.stride() for x in xs)
        out = []
        for i in range(0, len(x0), chunk):
            if shared:
                out.append(self.g1(x0[i : i + chunk], idx=sel, shared=True))
            else:
                out.append(self.g1(torch.stack([x[i : i + chunk] for x in xs]), idx=sel))
        return torch.cat(out, dim=1)

    def _probe(self, idx: list[int], sel) -> list[float]:
        data = [self.data.probe_data(self._eval_gen(r, 3)) for r in idx]
        n = self.cfg.eval.probe_train_size
        cut = (lambda t: t) if n is None else (lambda t: t[:n])  # noqa: E731
        f_tr = self._features([cut(d[0]) for d in data], sel)
        f_te = self._features([d[2] for d in data], sel)
        y_tr, y_te = [cut(d[1]) for d in data], [d[3] for d in data]
        same = all(torch.equal(y, y_tr[0]) for y in y_tr) and all(torch.equal(y, y_te[0]) for y in y_te)
        if isinstance(self.probe, TorchProbe) and same:
            return fit_torch_probes(self.probe, f_tr, y_tr[0]).scores(f_te, y_te[0])
        jobs = [(f_tr[i], y_tr[i], f_te[i], y_te[i]) for i in range(len(idx))]
        workers = min(len(jobs), torch.get_num_threads())  # the trial's CPUs (Ray sets the thread count)
        if workers <= 1:
            return [self.probe.fit_score(*job) for job in jobs]
        # One fit per thread: scikit-learn's saga solver releases the GIL, and each fit is seeded.
        with ThreadPoolExecutor(workers) as pool:
            return list(pool.map(lambda job: self.probe.fit_score(*job), jobs))

    def _jacobian(self, idx: list[int], sel) -> list[dict[str, float]]:
        b = self.cfg.eval.jacobian_batch
        x = torch.stack([self.data.eval_batches("test", b, 1, self._eval_gen(r, 4))[0][0] for r in idx])
        logc = stacked_log_condition_numbers(self.g1, x, sel)
        return [{f"log_cond_p{q}": v for q, v in percentiles(logc[i]).items()} for i in range(len(idx))]

    def _adversarial_metrics(self, idx: list[int], sel) -> list[dict[str, float]]:
        arrays = self._labelled_train()
        feats = self._features([arrays[r][2] for r in idx], sel)
        pred = self.classifier(feats, idx=sel).argmax(-1)
        y = torch.stack([arrays[r][3] for r in idx])
        return [{"classifier_accuracy": a} for a in (pred == y).float().mean(1).tolist()]

    def evaluate(self, losses: Sequence[float | None] | None = None) -> list[dict[str, Any] | None]:
        """One ``Trainer.evaluate`` record per live replicate (None for the others)."""
        self._set_train(False)
        idx, sel = self._alive_index()
        recs: list[dict[str, Any]] = [{"event": "eval", "step": self.step} for _ in idx]
        loss = [None if losses is None else losses[r] for r in idx]
        if self.infomax:
            train, test = self._bounds("train", idx, sel), self._bounds("test", idx, sel)
            t = self.estimators[0].params.target
            for i, rec in enumerate(recs):
                rec["bound_train"], rec["bound_test"] = train[i], test[i]
                if loss[i] is None:  # step 0: the loss of the untrained model on the evaluation batches
                    loss[i] = -train[i] if t is None else abs(train[i] - t)
        else:
            for rec, extra in zip(recs, self._adversarial_metrics(idx, sel)):
                rec["bound_train"] = rec["bound_test"] = None
                rec.update(extra)
        probe = [None] * len(idx) if self.probe is None else self._probe(idx, sel)
        for i, rec in enumerate(recs):
            rec["probe_accuracy"] = probe[i]
            rec["loss"] = loss[i]
        if self.cfg.eval.jacobian:
            for rec, jac in zip(recs, self._jacobian(idx, sel)):
                rec.update(jac)
        out: list[dict[str, Any] | None] = [None] * self.size
        for r, rec in zip(idx, recs):
            rec["wall_s"] = self.wall_s
            out[r] = rec
        return out

    # -------------------------------------------------------------------- run
    def _remember(self, recs: list[dict[str, Any] | None]) -> None:
        for r, rec in enumerate(recs):
            if rec is not None:
                self.last_records[r] = rec

    def run(self) -> Iterator[list[dict[str, Any] | None]]:
        """Yield lists of R records: at step 0 (unless resumed past it), every ``eval.every`` steps and at
        the last step; and at once, at the step where a replicate's loss turns non-finite, its
        ``diverged`` record (merged into the evaluation list when the step is an evaluation step).
        Entry r is None when replicate r has nothing new. Stops when every replicate has stopped."""
        every, steps = self.cfg.eval.every, self.cfg.train.steps
        t0 = time.perf_counter() - self.wall_s
        if self.last_eval < 0:
            self.last_eval = 0
            recs = self.evaluate()
            self._remember(recs)
            yield recs
        while self.step < steps and any(self.alive):
            self._pending.append(self.train_step())
            self.wall_s = time.perf_counter() - t0
            at_eval = self.step % every == 0 or self.step == steps
            if not at_eval and self.step % SYNC_EVERY:
                continue
            out = self._drain()
            if at_eval and any(self.alive):
                means = [sum(ls) / len(ls) if ls else None for ls in self._losses]
                self._losses = [[] for _ in range(self.size)]
                self.last_eval = self.step
                recs = self.evaluate(means)
                self.wall_s = time.perf_counter() - t0
                out = [o if o is not None else rec for o, rec in zip(out, recs)]
            if any(o is not None for o in out):
                self._remember(out)
                yield out

    def _drain(self) -> list[dict[str, Any] | None]:
        """Read the losses of the steps since the last read (one wait for the device, not one per step).
        A replicate whose loss turned non-finite stops: its ``diverged`` record, with the step it happened
        at. (Until the read it trained on; its gradients are its own, so the others are untouched.)"""
        rows = torch.stack(self._pending).tolist() if self._pending else []
        first = self.step - len(rows) + 1
        self._pending = []
        out: list[dict[str, Any] | None] = [None] * self.size
        for i, row in enumerate(rows):
            for r, loss in enumerate(row):
                if not self.alive[r]:
                    continue
                if not math.isfinite(loss):
                    self.alive[r] = False
                    out[r] = {"event": "diverged", "step": first + i, "loss": None,
                              "reason": f"training loss is {loss}", "wall_s": self.wall_s}
                else:
                    self._losses[r].append(loss)
        return out

    # ------------------------------------------------------------- checkpoint
    def _base_config(self) -> dict[str, Any]:
        return {k: v for k, v in self.cfg.to_dict().items() if k != "seed"}

    def state_dict(self) -> dict[str, Any]:
        assert not self._pending, "checkpoint between host reads of the losses"
        return {
            "version": PACK_CHECKPOINT_VERSION,
            "kind": "pack",
            "config": self._base_config(),
            "seeds": list(self.seeds),
            "step": self.step,
            "wall_s": self.wall_s,
            "losses": [list(ls) for ls in self._losses],
            "last_eval": self.last_eval,
            "last_records": list(self.last_records),
            "alive": list(self.alive),
            "warm": self._warm,
            "modules": {n: s.state_dict() for n, s in self._stacks().items()},
            "estimators": None if self.estimators is None else [e.state_dict() for e in self.estimators],
            "opt": self.opt.state_dict(),
            "cls_opt": None if self.cls_opt is None else self.cls_opt.state_dict(),
            "gens": [g.get_state() for g in self.gens],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("kind") != "pack" or state.get("version") != PACK_CHECKPOINT_VERSION:
            raise ValueError(f"not a pack checkpoint of version {PACK_CHECKPOINT_VERSION}")
        if state["config"] != self._base_config():
            raise ConfigError("checkpoint", "was written by a different trial config")
        if list(state["seeds"]) != self.seeds:
            raise ConfigError("checkpoint", f"was written for seeds {state['seeds']}, not {self.seeds}")
        for n, s in self._stacks().items():
            s.load_state_dict(state["modules"][n])
        for e, es in zip(self.estimators or [], state["estimators"] or []):
            e.load_state_dict(es)
        self.opt.load_state_dict(state["opt"])
        if self.cls_opt is not None:
            self.cls_opt.load_state_dict(state["cls_opt"])
        for g, gs in zip(self.gens, state["gens"]):
            g.set_state(gs)
        self.step, self.wall_s, self.last_eval = state["step"], state["wall_s"], state["last_eval"]
        self._losses = [list(ls) for ls in state["losses"]]
        self.last_records = list(state["last_records"])
        self.alive = list(state["alive"])
        self._warm = state["warm"]

    def save(self, path) -> None:
        torch.save(self.state_dict(), path)

    def load(self, path) -> None:
        self.load_state_dict(torch.load(path, map_location=self.device, weights_only=False))

    # --------------------------------------------------------- one replicate
    def _opt_layout(self) -> list[tuple[torch.optim.Optimizer, list[tuple[int, Stacked | None, str]]]]:
        """For each optimiser, ``Trainer``'s parameter order as (our index, the stack holding it or None
        for an estimator's own parameter, its name). Our order: the stacks' leaves, then estimator 0's
        parameters, estimator 1's, ..."""
        def stacked(*stacks):
            return [(i, s, name) for i, (s, name) in enumerate((s, n) for s in stacks for n in s.leaves)]

        if not self.infomax:
            return [(self.opt, stacked(self.g1)), (self.cls_opt, stacked(self.classifier))]
        return [(self.opt, stacked(self.g1, self.g2, self.critic))]

    def replicate_state_dict(self, r: int) -> dict[str, Any]:
        """Replicate r's state as a ``Trainer`` checkpoint: ``Trainer(config with seed seeds[r])`` loads it
        and continues exactly as the replicate would have (engine hand-off, one trial per checkpoint)."""
        modules = {n: s.replicate_state(r) for n, s in self._stacks().items() if n != "classifier"}
        if self.estimators is not None:
            modules["estimator"] = {k: v.detach().clone() for k, v in self.estimators[r].state_dict().items()}
        if self.classifier is not None:
            modules["classifier"] = self.classifier.replicate_state(r)
        opts = []
        for opt, layout in self._opt_layout():
            if opt is self.opt and self.estimators is not None:
                n_est = len(list(self.estimators[0].parameters()))
                start = len(layout) + r * n_est
                layout = layout + [(start + j, None, "") for j in range(n_est)]
            sd = opt.state_dict()
            st = {}
            for i, (j, stack, name) in enumerate(layout):
                if j not in sd["state"]:
                    continue
                st[i] = {}
                for k, v in sd["state"][j].items():
                    if stack is not None and k != "step":  # a moment of the stacked leaf: replicate r's slice
                        v = stack.as_module(name, v[r])
                    st[i][k] = v.clone(memory_format=torch.contiguous_format)
            groups = [{**_trainer_group(g), "params": list(range(len(layout)))} for g in sd["param_groups"]]
            opts.append({"state": st, "param_groups": groups})
        return {
            "version": CHECKPOINT_VERSION,
            "config": self.configs[r].to_dict(),
            "step": self.step,
            "wall_s": self.wall_s,
            "losses": list(self._losses[r]),
            "last_eval": self.last_eval,
            "last_record": self.last_records[r],
            "warm": self._warm,
            "modules": modules,
            "opt": opts[0],
            "cls_opt": opts[1] if len(opts) > 1 else None,
            "gen": self.gens[r].get_state(),
        }


def _trainer_group(group: dict[str, Any]) -> dict[str, Any]:
    """Our Adam's hyperparameters as ``Trainer``'s default (unfused) Adam records them."""
    ref = torch.optim.Adam([torch.zeros(1)], lr=group["lr"], betas=group["betas"], eps=group["eps"])
    return ref.state_dict()["param_groups"][0]


# ------------------------------------------------------------------------------- pack size


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
    res = resolve(dict(_raw(config), seed=0))
    cfg = res.config
    k = cfg.train.batch_size
    sizes: list[int] = []

    def hook(_module, _inputs, output):
        if torch.is_tensor(output):
            sizes.append(output.numel())

    with seeded(0), torch.device("meta"):
        mods = build_modules(res, res.view, "meta")
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
    if res.probe is not None:
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
    if n_seeds < 1:
        return 1
    raw = _raw(config)
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
        dev = resolve_device(str(device or _raw(config).get("device", "cpu")))
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


def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.cuda.OutOfMemoryError) or (
        isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()
    )


def train_packs(
    config: Mapping[str, Any] | TrialConfig, seeds: Sequence[int], pack: int | None = None, device: str | None = None
) -> Iterator[tuple[int, dict[str, Any]]]:
    """Train ``seeds`` in packs of ``pack`` (default ``auto_pack_size``), yielding (seed, record) in each
    replicate's order. A pack's step-0 records are held back until it has taken a training step; if it
    runs out of memory before then, it is rebuilt in packs of half the size (down to 1) and nothing is
    reported twice. Running out of memory later is raised."""
    seeds = list(seeds)
    size = max(1, min(pack or auto_pack_size(config, len(seeds), device), max(1, len(seeds))))
    start = 0
    while start < len(seeds):
        chunk = seeds[start : start + size]
        held: list[tuple[int, dict[str, Any]]] = []
        committed = False
        try:
            trainer = PackedTrainer(config, chunk, device)
            for recs in trainer.run():
                items = [(chunk[r], rec) for r, rec in enumerate(recs) if rec is not None]
                if not committed and trainer.step == 0:
                    held += items
                    continue
                committed = True
                yield from held + items
                held = []
        except Exception as exc:
            if committed or size == 1 or not _is_oom(exc):
                raise
            trainer = None
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            size = (len(chunk) + 1) // 2  # halve the pack that did not fit, rounding up
            continue
        yield from held  # a pack with no training steps
        start += len(chunk)
