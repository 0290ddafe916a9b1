"""Training modes: what a trial trains and how. Registry: MODES.

A mode is a strategy object of one ``Trainer``. Its class checks the config's mode-specific parts
(``resolve``, called by ``config.resolve``) and builds one replicate's modules from the seeded RNG
(``build``); its instance, given the trainer, holds the optimisers, takes one training step of every
replicate (``step``) and gives each live replicate's mode-specific evaluation metrics (``metrics``).
The trainer stacks the modules named in ``stacked`` over the replicates; anything else a mode builds
stays one module per replicate. A new mode is one class here and one line in MODES.
"""

from __future__ import annotations

from typing import Any, Callable, ClassVar

import torch
from torch import nn

from mimax.errors import ConfigError
from mimax.trainables.critics import CRITICS
from mimax.trainables.estimators import ESTIMATORS
from mimax.trainables.functional import Index, join
from mimax.trainables.optim import tf1_epsilon
from mimax.trainables.speed import build_forward, stateless

Component = tuple[type, Any]  # (class, its validated Params)


def adam(params: list[torch.Tensor], lr: float, flavour: str) -> torch.optim.Adam:
    """The paper's Adam (β 0.9/0.999, ε 1e-8), with ε where PyTorch (``torch``) or TF1 (``tf1``) adds it."""
    # Fused: one pass over every (R×) tensor where the per-op implementation is bound by memory traffic
    # (5× slower on CPU for an 8-pack of MLPs); it rounds within an ulp of the unfused one. It assumes a
    # parameter, its gradient and its moments share one layout (it silently miscomputes otherwise): the
    # stacks keep every parameter contiguous.
    opt = torch.optim.Adam(params, lr=lr, betas=(0.9, 0.999), eps=1e-8, fused=True)
    if flavour == "tf1":
        tf1_epsilon(opt)
    return opt


class Mode:
    """Base of every training mode (see the module docstring)."""

    name: ClassVar[str]
    stacked: ClassVar[tuple[str, ...]]  # modules stacked over the replicates; "g1" is evaluated
    section: ClassVar[str | None] = None  # the config section this mode owns (filled with its defaults)
    speed_switches: ClassVar[bool] = False  # train.precision and train.compile apply

    @classmethod
    def resolve(cls, cfg, data_cls: type, encoder: Component, view, component: Callable) -> tuple:
        """Check the config's mode-specific parts; (critic, estimator, config sections to set).
        ``component(registry, family, raw)`` looks a component section up: (class, params, section)."""
        raise NotImplementedError  # pragma: no cover

    @staticmethod
    def build(resolved, view, device) -> dict[str, nn.Module]:
        """One replicate's modules, in the order they draw from the (seeded) torch RNG."""
        raise NotImplementedError  # pragma: no cover

    def __init__(self, trainer, built: list[dict[str, nn.Module]]):
        self.trainer = trainer
        self.optimisers: list[torch.optim.Optimizer] = []
        self.extras: list[nn.Module] = []  # unstacked modules, switched between train and eval with the stacks

    def step(self) -> torch.Tensor:
        """One training step of every replicate: the (R,) losses, on the device."""
        raise NotImplementedError  # pragma: no cover

    def metrics(self, idx: list[int], sel: Index) -> list[dict[str, Any]]:
        """The first entries of each live replicate's evaluation record (replicates ``idx``)."""
        raise NotImplementedError  # pragma: no cover

    def initial_loss(self, metrics: dict[str, Any]) -> float | None:
        """The loss reported at step 0, before any training step."""
        return None

    def ceiling(self) -> float | None:
        return None

    def param_counts(self) -> dict[str, int]:
        """Parameters of one replicate, per module."""
        return {"g1": 0, "g2": 0, "critic": 0, **{name: s.n_params() for name, s in self.trainer.stacks.items()}}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


def _encoder(resolved, view, device) -> nn.Module:
    enc_cls, enc_params = resolved.encoder
    return enc_cls(enc_params, view).to(device)


class InfoMax(Mode):
    """Maximise the estimator's objective (or push its estimate to a target) over g1, g2 and the critic."""

    name = "infomax"
    stacked = ("g1", "g2", "critic")
    speed_switches = True

    @classmethod
    def resolve(cls, cfg, data_cls, encoder, view, component):
        for key in ("critic", "estimator"):
            if getattr(cfg, key) is None:
                raise ConfigError(f"{key}.name", "missing required key")
        crit_cls, crit_params, crit_sec = component(CRITICS, "critic", cfg.critic)
        est_cls, est_params, est_sec = component(ESTIMATORS, "estimator", cfg.estimator)
        enc_cls, enc_params = encoder
        enc_out = enc_cls.output_dim(enc_params, view)
        crit_cls.check(crit_params, enc_out, enc_out)
        if not (enc_cls.has_parameters or crit_cls.has_parameters or est_cls.has_parameters):
            raise ConfigError("critic.name", f"{enc_cls.name} encoders with a {crit_sec['name']} critic and "
                                             f"{est_sec['name']} leave nothing to train")
        return (crit_cls, crit_params), (est_cls, est_params), {"critic": crit_sec, "estimator": est_sec}

    @staticmethod
    def build(resolved, view, device):
        g1, g2 = _encoder(resolved, view, device), _encoder(resolved, view, device)
        (crit_cls, crit_params), (est_cls, est_params) = resolved.critic, resolved.estimator
        critic = crit_cls(crit_params, g1.out_dim, g2.out_dim).to(device)
        return {"g1": g1, "g2": g2, "critic": critic, "estimator": est_cls(est_params).to(device)}

    def __init__(self, trainer, built):
        super().__init__(trainer, built)
        # Estimators stay one module per replicate: some hold state (MINE's moving average, TUBA's
        # baseline), some index with masks vmap refuses.
        self.estimators: list[nn.Module] = [b["estimator"] for b in built]
        self.extras = self.estimators
        g1, g2, critic = (trainer.stacks[n] for n in self.stacked)
        free = all(stateless(e) for e in self.estimators)
        est = self.estimators[0]
        if free and trainer.size > 1:
            # A stateless estimator is one function of the scores: vmapped over the pack it is a few
            # kernels instead of R times as many, which a GPU spends launching.
            losses = torch.vmap(lambda scores: est.loss(est(scores)))
        else:
            losses = lambda scores: torch.stack(  # noqa: E731
                [e.loss(e(scores[r])) for r, e in enumerate(self.estimators)])
        cfg = trainer.cfg
        self.forward = build_forward(lambda x1, x2: critic(g1(x1), g2(x2)), losses, cfg.train, trainer.device, free)
        params = g1.parameters() + g2.parameters() + critic.parameters()
        own = [p for e in self.estimators for p in e.parameters()]
        self.opt = adam(params + own, cfg.train.lr, cfg.train.adam)
        self.optimisers = [self.opt]

    def step(self) -> torch.Tensor:
        t = self.trainer
        pairs = [t.data.train_batch(t.cfg.train.batch_size, g) for g in t.gens]
        losses = self.forward(join([p[0] for p in pairs]), join([p[1] for p in pairs]))  # (R,) from (R, K, K)
        t.descend(self.opt, losses)
        return losses.detach()

    @torch.no_grad()
    def _bounds(self, split: str, idx: list[int], sel: Index) -> list[float]:
        t = self.trainer
        k, n = t.cfg.train.batch_size, t.cfg.eval.bound_batches
        per = [t.data.eval_batches(split, k, n, t.eval_gen(r, 1 + (split == "test"))) for r in idx]
        g1, g2, critic = (t.stacks[name] for name in self.stacked)
        rows = []
        for b in range(n):
            x1, x2 = join([batches[b][0] for batches in per]), join([batches[b][1] for batches in per])
            scores = critic(g1(x1, idx=sel), g2(x2, idx=sel), idx=sel)
            rows.append(torch.stack([self.estimators[r](scores[i]).value for i, r in enumerate(idx)]))
        table = torch.stack(rows).tolist()  # (n, R'): one transfer
        return [sum(row[i] for row in table) / n for i in range(len(idx))]

    def metrics(self, idx, sel):
        train, test = self._bounds("train", idx, sel), self._bounds("test", idx, sel)
        return [{"bound_train": a, "bound_test": b} for a, b in zip(train, test)]

    def initial_loss(self, metrics):
        # The loss of the untrained model on the evaluation batches.
        t = self.estimators[0].params.target
        return -metrics["bound_train"] if t is None else abs(metrics["bound_train"] - t)

    def ceiling(self):
        return self.estimators[0].ceiling(self.trainer.cfg.train.batch_size)

    def param_counts(self):
        counts, own = super().param_counts(), sum(p.numel() for p in self.estimators[0].parameters())
        return {**counts, "estimator": own} if own else counts  # TUBA's baseline

    def state_dict(self):
        return {"estimators": [e.state_dict() for e in self.estimators]}

    def load_state_dict(self, state):
        for e, es in zip(self.estimators, state["estimators"]):
            e.load_state_dict(es)


class Adversarial(Mode):
    """The paper's Fig. 1c: a linear softmax classifier learns the labels from g1's features; g1 learns to
    make its prediction uniform. A step is a round of classifier steps and one encoder step."""

    name = "adversarial"
    stacked = ("g1", "classifier")
    section = "adversarial"

    @classmethod
    def resolve(cls, cfg, data_cls, encoder, view, component):
        for key in ("critic", "estimator"):
            if getattr(cfg, key) is not None:
                raise ConfigError(key, "not used by train.mode 'adversarial'; remove it")
        if not data_cls.labelled:
            raise ConfigError("train.mode", f"'adversarial' needs labelled data; data {data_cls.name!r} has none")
        if not encoder[0].has_parameters:
            raise ConfigError("encoder.name", f"'adversarial' trains the encoder; {encoder[0].name} has no parameters")
        return None, None, {"critic": None, "estimator": None}

    @staticmethod
    def build(resolved, view, device):
        g1 = _encoder(resolved, view, device)
        return {"g1": g1, "classifier": nn.Linear(g1.out_dim, resolved.data[0].n_classes).to(device)}

    def __init__(self, trainer, built):
        super().__init__(trainer, built)
        adv, flavour = trainer.cfg.adversarial, trainer.cfg.train.adam
        self.opt = adam(trainer.stacks["g1"].parameters(), adv.encoder_lr, flavour)
        self.cls_opt = adam(trainer.stacks["classifier"].parameters(), adv.classifier_lr, flavour)
        self.optimisers = [self.opt, self.cls_opt]
        self.warm = False  # the classifier's warm-up is done
        self._arrays = None

    def _labelled(self):
        """Each replicate's fixed (noise-free or fixed-noise) arrays for the game."""
        if self._arrays is None:
            t = self.trainer
            self._arrays = [t.data.probe_data(torch.Generator(t.device).manual_seed(s + 7919)) for s in t.seeds]
        return self._arrays

    def _batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        t = self.trainer
        xs, ys = [], []
        for (x, y, _, _), g in zip(self._labelled(), t.gens):
            i = torch.randint(len(y), (t.cfg.train.batch_size,), generator=g, device=t.device)
            xs.append(x[i])
            ys.append(y[i])
        return join(xs), join(ys)

    def _classifier_step(self) -> None:
        g1, classifier = (self.trainer.stacks[n] for n in self.stacked)
        x, y = self._batch()
        with torch.no_grad():
            feats = g1(x)
        logits = classifier(feats)  # (R, K, classes)
        losses = nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none").view(y.shape)
        self.trainer.descend(self.cls_opt, losses.mean(1))

    def step(self) -> torch.Tensor:
        adv = self.trainer.cfg.adversarial
        for _ in range(0 if self.warm else adv.warmup):
            self._classifier_step()
        self.warm = True
        for _ in range(adv.classifier_steps):
            self._classifier_step()
        g1, classifier = (self.trainer.stacks[n] for n in self.stacked)
        x, _ = self._batch()
        logp = torch.log_softmax(classifier(g1(x)), dim=-1)
        losses = -logp.flatten(1).mean(1)  # cross-entropy to the uniform distribution over classes
        self.trainer.descend(self.opt, losses)
        return losses.detach()

    @torch.no_grad()
    def metrics(self, idx, sel):
        arrays = self._labelled()
        feats = self.trainer.features([arrays[r][2] for r in idx], sel)
        pred = self.trainer.stacks["classifier"](feats, idx=sel).argmax(-1)
        y = join([arrays[r][3] for r in idx])
        return [{"bound_train": None, "bound_test": None, "classifier_accuracy": a}
                for a in (pred == y).float().mean(1).tolist()]

    def state_dict(self):
        return {"warm": self.warm}

    def load_state_dict(self, state):
        self.warm = state["warm"]


MODES: dict[str, type[Mode]] = {c.name: c for c in (InfoMax, Adversarial)}
