"""One trial: a plain function of a validated config that yields evaluation records.

No Ray, no database: ``Trainer(config).run()`` yields dicts; ``save``/``load`` checkpoint the whole
state (models, optimisers, RNGs, step) so a restored trainer continues exactly where it stopped.
"""

from __future__ import annotations

import math
import time
from contextlib import contextmanager
from typing import Any, Iterator, Mapping

import torch
from torch import nn

from mimax.errors import ConfigError
from mimax.trainables.config import Resolved, TrialConfig, resolve
from mimax.trainables.diagnostics import log_condition_numbers, percentiles
from mimax.trainables.speed import build_forward, stateless

CHECKPOINT_VERSION = 1
# Steps between host reads of the training losses: a read waits for the device, so reading every step
# would keep a GPU from running ahead of Python.
SYNC_EVERY = 100


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


@contextmanager
def seeded(seed: int):
    """Build models from the trial seed without disturbing the caller's global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def n_params(module: nn.Module | None) -> int:
    return 0 if module is None else sum(p.numel() for p in module.parameters())


class Trainer:
    """Train and evaluate one trial. ``run()`` yields one record per evaluation."""

    def __init__(self, config: Mapping[str, Any] | TrialConfig, device: str | None = None):
        self.resolved: Resolved = resolve(config)
        cfg = self.cfg = self.resolved.config
        self.device = resolve_device(device or cfg.device)
        data_cls, data_params = self.resolved.data
        self.data = data_cls(data_params, self.device)
        view = self.data.spec
        enc_cls, enc_params = self.resolved.encoder
        with seeded(cfg.seed):
            self.g1 = enc_cls(enc_params, view).to(self.device)
            self.g2 = enc_cls(enc_params, view).to(self.device) if cfg.train.mode == "infomax" else None
            if cfg.train.mode == "infomax":
                crit_cls, crit_params = self.resolved.critic
                est_cls, est_params = self.resolved.estimator
                self.critic = crit_cls(crit_params, self.g1.out_dim, self.g2.out_dim).to(self.device)
                self.estimator = est_cls(est_params).to(self.device)
                self.classifier = None
                self._forward = build_forward(self._scores, lambda s: self.estimator.loss(self.estimator(s)),
                                              cfg.train, self.device, stateless(self.estimator))
            else:
                self.critic = self.estimator = None
                self.classifier = nn.Linear(self.g1.out_dim, self.data.n_classes).to(self.device)
        self.probe = None
        if self.resolved.probe is not None:
            p_cls, p_params = self.resolved.probe
            self.probe = p_cls(p_params)
        self._build_optimisers()
        self.gen = torch.Generator(self.device).manual_seed(cfg.seed)
        self.step = 0
        self.wall_s = 0.0
        self._losses: list[float] = []
        self._pending: list[torch.Tensor] = []  # losses not yet read from the device
        self.last_eval = -1  # step of the last evaluation yielded
        self.last_record: dict[str, Any] | None = None  # kept in checkpoints so a restore can re-report it
        self._warm = False  # adversarial warm-up done
        self._probe_arrays = None

    # ----------------------------------------------------------------- set-up
    def _build_optimisers(self):
        adam = dict(betas=(0.9, 0.999), eps=1e-8)
        if self.cfg.train.mode == "infomax":
            mods = [self.g1, self.g2, self.critic, self.estimator]
            params = [p for m in mods for p in m.parameters()]
            self.opt = torch.optim.Adam(params, lr=self.cfg.train.lr, **adam)
            self.cls_opt = None
        else:
            adv = self.cfg.adversarial
            self.opt = torch.optim.Adam(self.g1.parameters(), lr=adv.encoder_lr, **adam)
            self.cls_opt = torch.optim.Adam(self.classifier.parameters(), lr=adv.classifier_lr, **adam)

    def param_counts(self) -> dict[str, int]:
        out = {"g1": n_params(self.g1), "g2": n_params(self.g2), "critic": n_params(self.critic)}
        if n_params(self.estimator):
            out["estimator"] = n_params(self.estimator)
        if self.classifier is not None:
            out["classifier"] = n_params(self.classifier)
        return out

    def start_record(self) -> dict[str, Any]:
        return {
            "event": "start",
            "params": self.param_counts(),
            "config": self.cfg.to_dict(),
            "device": str(self.device),
            "true_mi": self.data.true_mi,
            "ceiling": self._ceiling(),
            "unit": "nats",
        }

    def _ceiling(self) -> float | None:
        return None if self.estimator is None else self.estimator.ceiling(self.cfg.train.batch_size)

    def _modules(self) -> dict[str, nn.Module]:
        names = ("g1", "g2", "critic", "estimator", "classifier")
        return {n: getattr(self, n) for n in names if getattr(self, n) is not None}

    def _set_train(self, mode: bool):
        for m in self._modules().values():
            m.train(mode)

    # --------------------------------------------------------------- training
    def _scores(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        return self.critic(self.g1(x1), self.g2(x2))

    def _infomax_step(self) -> torch.Tensor:
        x1, x2 = self.data.train_batch(self.cfg.train.batch_size, self.gen)
        loss = self._forward(x1, x2)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return loss.detach()

    def _labelled_train(self):
        if self._probe_arrays is None:
            # Fixed (noise-free or fixed-noise) arrays for the adversarial game and the probe.
            g = torch.Generator(self.device).manual_seed(self.cfg.seed + 7919)
            self._probe_arrays = self.data.probe_data(g)
        return self._probe_arrays

    def _classifier_step(self) -> torch.Tensor:
        x, y, _, _ = self._labelled_train()
        idx = torch.randint(len(y), (self.cfg.train.batch_size,), generator=self.gen, device=self.device)
        with torch.no_grad():
            feats = self.g1(x[idx])
        loss = nn.functional.cross_entropy(self.classifier(feats), y[idx])
        self.cls_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.cls_opt.step()
        return loss.detach()

    def _encoder_step(self) -> torch.Tensor:
        x, _, _, _ = self._labelled_train()
        idx = torch.randint(len(x), (self.cfg.train.batch_size,), generator=self.gen, device=self.device)
        logp = torch.log_softmax(self.classifier(self.g1(x[idx])), dim=1)
        loss = -logp.mean()  # cross-entropy to the uniform distribution over classes
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return loss.detach()

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
        """One step; returns its training loss as a 0-d tensor on the device (reading it waits for the device)."""
        self._set_train(True)
        if self.cfg.train.mode == "infomax":
            loss = self._infomax_step()
        else:
            loss = self._adversarial_round()
        self.step += 1
        return loss

    # ------------------------------------------------------------- evaluation
    def _eval_gen(self, salt: int) -> torch.Generator:
        # Evaluation draws from its own stream, so evaluating never changes the training trajectory.
        return torch.Generator(self.device).manual_seed(self.cfg.seed * 1_000_003 + self.step * 31 + salt)

    @torch.no_grad()
    def _bound(self, split: str) -> float:
        k = self.cfg.train.batch_size
        batches = self.data.eval_batches(split, k, self.cfg.eval.bound_batches, self._eval_gen(1 + (split == "test")))
        vals = [float(self.estimator(self._scores(x1, x2)).value) for x1, x2 in batches]
        return sum(vals) / len(vals)

    @torch.no_grad()
    def features(self, x: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
        return torch.cat([self.g1(x[i : i + chunk]) for i in range(0, len(x), chunk)])

    def _probe(self) -> float:
        x_tr, y_tr, x_te, y_te = self.data.probe_data(self._eval_gen(3))
        n = self.cfg.eval.probe_train_size
        if n is not None:
            x_tr, y_tr = x_tr[:n], y_tr[:n]
        return self.probe.fit_score(self.features(x_tr), y_tr, self.features(x_te), y_te)

    def _jacobian(self) -> dict[str, float]:
        x1, _ = self.data.eval_batches("test", self.cfg.eval.jacobian_batch, 1, self._eval_gen(4))[0]
        logc = log_condition_numbers(self.g1, x1)
        return {f"log_cond_p{q}": v for q, v in percentiles(logc).items()}

    def _adversarial_metrics(self) -> dict[str, float]:
        _, _, x_te, y_te = self._labelled_train()
        with torch.no_grad():
            pred = self.classifier(self.features(x_te)).argmax(1)
        return {"classifier_accuracy": float((pred == y_te).float().mean())}

    def evaluate(self, loss: float | None = None) -> dict[str, Any]:
        self._set_train(False)
        rec: dict[str, Any] = {"event": "eval", "step": self.step}
        if self.estimator is not None:
            rec["bound_train"] = self._bound("train")
            rec["bound_test"] = self._bound("test")
            if loss is None:  # step 0: the loss of the untrained model on the evaluation batches
                t = self.estimator.params.target
                loss = -rec["bound_train"] if t is None else abs(rec["bound_train"] - t)
        else:
            rec["bound_train"] = rec["bound_test"] = None
            rec.update(self._adversarial_metrics())
        rec["probe_accuracy"] = None if self.probe is None else self._probe()
        rec["loss"] = loss
        if self.cfg.eval.jacobian:
            rec.update(self._jacobian())
        rec["wall_s"] = self.wall_s
        return rec

    # -------------------------------------------------------------------- run
    def run(self) -> Iterator[dict[str, Any]]:
        """Yield evaluation records: at step 0 (unless resumed past it), every ``eval.every`` steps and
        at the last step. A non-finite loss yields one ``diverged`` record and stops."""
        every, steps = self.cfg.eval.every, self.cfg.train.steps
        t0 = time.perf_counter() - self.wall_s
        if self.last_eval < 0:
            self.last_eval = 0
            self.last_record = self.evaluate()
            yield self.last_record
        while self.step < steps:
            self._pending.append(self.train_step())
            self.wall_s = time.perf_counter() - t0
            at_eval = self.step % every == 0 or self.step == steps
            if not at_eval and self.step % SYNC_EVERY:
                continue
            diverged = self._drain()
            if diverged is not None:
                yield diverged
                return
            if at_eval:
                mean_loss = sum(self._losses) / len(self._losses)
                self._losses = []
                self.last_eval = self.step
                rec = self.evaluate(mean_loss)
                self.wall_s = time.perf_counter() - t0
                self.last_record = rec
                yield rec

    def _drain(self) -> dict[str, Any] | None:
        """Read the losses of the steps since the last read (one wait for the device, not one per step).
        The first non-finite loss ends the run: its ``diverged`` record, with the step it happened at."""
        losses = torch.stack(self._pending).tolist() if self._pending else []
        first = self.step - len(losses) + 1
        self._pending = []
        for i, loss in enumerate(losses):
            if not math.isfinite(loss):
                self.step = first + i
                return {"event": "diverged", "step": self.step, "loss": None,
                        "reason": f"training loss is {loss}", "wall_s": self.wall_s}
            self._losses.append(loss)
        return None

    # ------------------------------------------------------------- checkpoint
    def state_dict(self) -> dict[str, Any]:
        assert not self._pending, "checkpoint between host reads of the losses"
        return {
            "version": CHECKPOINT_VERSION,
            "config": self.cfg.to_dict(),
            "step": self.step,
            "wall_s": self.wall_s,
            "losses": list(self._losses),
            "last_eval": self.last_eval,
            "last_record": self.last_record,
            "warm": self._warm,
            "modules": {n: m.state_dict() for n, m in self._modules().items()},
            "opt": self.opt.state_dict(),
            "cls_opt": None if self.cls_opt is None else self.cls_opt.state_dict(),
            "gen": self.gen.get_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("version") != CHECKPOINT_VERSION:
            raise ValueError(f"checkpoint version {state.get('version')} is not {CHECKPOINT_VERSION}")
        if state["config"] != self.cfg.to_dict():
            raise ConfigError("checkpoint", "was written by a different trial config")
        for n, m in self._modules().items():
            m.load_state_dict(state["modules"][n])
        self.opt.load_state_dict(state["opt"])
        if self.cls_opt is not None:
            self.cls_opt.load_state_dict(state["cls_opt"])
        self.gen.set_state(state["gen"])
        self.step, self.wall_s = state["step"], state["wall_s"]
        self._losses, self._warm = list(state["losses"]), state["warm"]
        self.last_eval = state["last_eval"]
        self.last_record = state["last_record"]

    def save(self, path) -> None:
        torch.save(self.state_dict(), path)

    def load(self, path) -> None:
        self.load_state_dict(torch.load(path, map_location=self.device, weights_only=False))


def train(config: Mapping[str, Any] | TrialConfig) -> Iterator[dict[str, Any]]:
    """Convenience: yield the evaluation records of a fresh trial."""
    yield from Trainer(config).run()
