"""The study's searcher: Optuna picks configurations, mimax runs each with every seed.

One Optuna trial is one configuration; its replicates (one per seed) are separate Ray trials and
separate rows in the store. The Optuna trial is told once all its replicates have ended: COMPLETE
with the mean objective over completed replicates, PRUNED (with intermediate values) when the
scheduler stopped them, FAIL otherwise. State lives in the database, never only in a pickle: a new
searcher rebuilds everything from the store and reconciles Optuna trials left RUNNING. A pack that
did not fit its device reports ``pack_split`` and ends nothing: its members run next in smaller packs.
A pack that Ray's infrastructure failed under (``outcome.interrupted``: its worker killed, its node gone)
is run again from its last checkpoint, up to ``MAX_RETRIES`` times in a session; a resume runs it again
too, unless its configuration's Optuna trial is already finished.
"""

from __future__ import annotations

import logging
import re
import warnings
from collections import defaultdict, deque
from pathlib import Path

import optuna
from ray.tune.search import Searcher

from mimax.contract import PackConfig, PackItem
from mimax.storage.db import TERMINAL
from mimax.study.adapters import without_stop
from mimax.study.outcome import final_state, interrupted, objective_values
from mimax.trainables.config import validate
from mimax.trainables.tune_adapter import CHECKPOINT_FILE, read_meta, records_of

log = logging.getLogger(__name__)
TrialState = optuna.trial.TrialState
MAX_RETRIES = 2  # runs again of an interrupted pack in one session, before it counts as failed


def trial_key(number: int, seed: int) -> str:
    return f"c{number:04d}-s{seed}"


class StudySearcher(Searcher):
    # Set by the StoreCallback wired to this searcher: errored packs then wait for ``settle``, which
    # gets the error text (Ray tells the searcher before the callbacks, and only them the text).
    deferring = False

    def __init__(self, *, store, study: dict, space, target_configs: int, session: int = 0,
                 pack: int | str = 1, trial_gpus: float = 0.0, metric: str | None = None,
                 mode: str | None = None):
        super().__init__(metric=metric, mode=mode)
        self.store, self.study_name, self.space = store, study["name"], space
        self.target = target_configs
        self.pack = pack  # replicates per Ray trial: a number, or "auto" (as many as fit in memory)
        self.trial_gpus = trial_gpus  # each trial's share of a GPU (0: trials run on CPUs)
        self.seeds = space.seed_values()
        self.metrics = list(space.metrics)
        # Optuna's storage API (public) for what Study does not offer: trial ids, intermediate values,
        # and settling a trial without the sampler's hooks.
        self.storage = store.optuna_storage()
        self.ot_study = optuna.load_study(
            study_name=study["optuna_study_name"], storage=self.storage,
            sampler=without_stop(space.make_sampler(session=session)),
        )
        self.ot_study_id = self.storage.get_study_id_from_name(study["optuna_study_name"])
        if self.ot_study.metric_names != self.metrics:  # optuna-dashboard shows them, not "Objective 0"
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                self.ot_study.set_metric_names(self.metrics)
        self.queue: deque[PackItem] = deque()  # packs to run
        self.live: dict[str, PackItem] = {}  # Ray trial id -> pack
        self.last: dict[str, dict] = {}  # trial_key -> last record seen (with the pack's params.*)
        self.groups: dict[int, dict[int, tuple[str, dict | None]]] = defaultdict(dict)  # number -> seed -> outcome
        self.group_size: dict[int, int] = {}
        self.curves: dict[int, dict[int, dict[int, float]]] = defaultdict(lambda: defaultdict(dict))
        self.errored: dict[str, PackItem] = {}  # Ray trial id -> pack that failed, until settled
        self.retries: dict[str, int] = defaultdict(int)  # pack key -> runs again in this session
        self._rebuild()

    # ------------------------------------------------------------ start-up
    def _rebuild(self) -> None:
        """Queue unfinished replicates (from their last checkpoint), those that Ray's infrastructure
        failed under included, and reconcile Optuna with the store."""
        rows = self.store.trials(self.study_name)
        finals = self.store.final_records(self.study_name)
        by_key = {row["trial_key"]: row for row in rows}
        unfinished: dict[int, list[dict]] = defaultdict(list)
        terminal: set[str] = set()
        for row in rows:
            number = row["optuna_trial_number"]
            self.group_size[number] = self.group_size.get(number, 0) + 1
            if row["state"] == "failed" and interrupted(row.get("error")) and not self._told(number):
                # Ray failed under it: it lost time, not its result. Run it again (from its checkpoint).
                self.store.update_trial(self.study_name, row["trial_key"], state="pending", error=None,
                                        ended_at=None)
                row = dict(row, state="pending")
            if row["state"] in TERMINAL:
                terminal.add(row["trial_key"])
                self.groups[number][row["seed"]] = (row["state"], finals.get(row["trial_key"]))
            else:
                unfinished[number].append(row)
        for number, group in unfinished.items():
            fresh, packed = [], set()
            for row in group:
                if row["trial_key"] in packed:
                    continue
                ckpt = row.get("checkpoint")
                meta = read_meta(ckpt) if ckpt and (Path(ckpt) / CHECKPOINT_FILE).exists() else None
                if meta and row["trial_key"] in meta.get("trial_keys", []) and all(k in by_key for k in meta["trial_keys"]):
                    # Resume the whole pack from its checkpoint (members that already ended stay ended in it,
                    # and those whose outcome reached the store are not written again).
                    members = [(k, by_key[k]["seed"]) for k in meta["trial_keys"]]
                    packed.update(meta["trial_keys"])
                    key = re.sub(r"-r\d+$", "", meta.get("pack_key", row["trial_key"]))  # a retry's name
                    self.queue.append(self._item(key, number, members, row["config"], ckpt,
                                                 terminal & set(meta["trial_keys"])))
                else:
                    fresh.append(row)
            self._queue_packs(number, [(r["trial_key"], r["seed"]) for r in fresh if r["trial_key"] not in packed],
                              group[0]["config"])
        self.asked = len(self.group_size)
        known = set(self.group_size)
        for t in self.ot_study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.WAITING)):
            if t.number not in known:
                self._adopt(t)
        for number in known:
            self._maybe_tell(number)

    def _adopt(self, t: optuna.trial.FrozenTrial) -> None:
        """An Optuna trial asked just before the driver died, before its replicates were recorded:
        finish its define-by-run suggestion (the sampler gives the same answers it would have) and
        run it; if that is impossible it never ran, so it is marked FAIL without the sampler's hooks."""
        trial_id = self._id_of(t.number)
        try:
            config = self.space.suggest(optuna.trial.Trial(self.ot_study, trial_id))
        except Exception:
            self.storage.set_trial_state_values(trial_id, TrialState.FAIL)
            self.storage.set_trial_user_attr(trial_id, "mimax_reconciled", "never ran")
            return
        self._record_group(t.number, config)

    def _record_group(self, number: int, config: dict) -> None:
        rows = []
        for i, seed in enumerate(self.seeds):
            full = validate(dict(config, seed=seed)).to_dict()
            rows.append({"trial_key": trial_key(number, seed), "optuna_trial_number": number, "config": full,
                         "seed": seed, "replicate_group": str(number), "replicate_index": i})
        self.store.add_trials(self.study_name, rows)
        self.group_size[number] = len(self.seeds)
        self.asked += 1
        self._queue_packs(number, [(r["trial_key"], r["seed"]) for r in rows], rows[0]["config"])

    def _pack_size(self, config: dict, n: int) -> int:
        if self.pack == "auto":
            from mimax.trainables.memory import auto_pack_size

            if self.trial_gpus:  # the trial's share of one GPU (Ray gives whole GPUs above 1)
                return auto_pack_size(config, n, device="cuda", share=min(1.0, self.trial_gpus))
            return auto_pack_size(config, n, device="cpu")
        return max(1, min(int(self.pack), n))

    def _queue_packs(self, number: int, members: list[tuple[str, int]], config: dict, size: int | None = None,
                     front: bool = False) -> None:
        if not members:
            return
        size = size or self._pack_size(config, len(members))
        items = []
        for i in range(0, len(members), size):
            chunk = members[i : i + size]
            key = chunk[0][0] if len(chunk) == 1 else f"c{number:04d}-p{chunk[0][1]}x{len(chunk)}"
            items.append(self._item(key, number, chunk, config, None))
        if front:
            self.queue.extendleft(reversed(items))
        else:
            self.queue.extend(items)

    def _split(self, item: PackItem) -> None:
        """Run the members of a pack that did not fit again, next, in packs of at most ``item["split"]``."""
        members = [(m["trial_key"], m["seed"]) for m in item["members"]]
        self._queue_packs(item["number"], members, item["trial"], size=item["split"], front=True)

    @staticmethod
    def _item(pack_key: str, number: int, members: list[tuple[str, int]], config: dict, resume: str | None,
              ended: set[str] = frozenset()) -> PackItem:
        """A pack to run. Members in ``ended`` already have their outcome in the store (a pack resumed
        from its checkpoint after the driver died between its members' final writes): the pack carries
        them, but nothing about them is written again."""
        trial = {k: v for k, v in config.items() if k != "seed"}
        return {"pack_key": pack_key, "number": number, "trial": trial, "resume_from": resume,
                "members": [{"trial_key": k, "seed": s, **({"ended": True} if k in ended else {})}
                            for k, s in members]}

    def remaining(self) -> int:
        """At most this many Ray trials (packs) are still to run in this session. A fresh pack of n
        replicates may split (tune_adapter) into smaller packs, and those again: at most 2n - 1 trials;
        each may run again MAX_RETRIES times when errors are settled by a callback."""
        most = lambda n: n if self.pack == 1 else 2 * n - 1  # noqa: E731
        queued = sum(1 if item["resume_from"] else most(len(item["members"])) for item in self.queue)
        tries = 1 + MAX_RETRIES if self.deferring else 1
        return (queued + (self.target - self.asked) * most(len(self.seeds))) * tries

    # -------------------------------------------------------------- asking
    def _ask(self) -> None:
        ot_trial = self.ot_study.ask()
        config = self.space.suggest(ot_trial)
        ot_trial.set_user_attr("mimax_seeds", self.seeds)
        self._record_group(ot_trial.number, config)

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        self._metric = metric or self._metric
        self._mode = mode or self._mode
        return True

    def suggest(self, trial_id: str) -> PackConfig | str | None:
        if not self.queue and self.asked < self.target:
            self._ask()
        if not self.queue:
            return Searcher.FINISHED if not self.live else None
        item = self.queue.popleft()
        self.live[trial_id] = item
        for m in item["members"]:
            if not m.get("ended"):
                self.store.update_trial(self.study_name, m["trial_key"], ray_trial_id=trial_id)
        config = {k: item[k] for k in ("pack_key", "trial", "members", "resume_from")}
        retry = self.retries.get(item["pack_key"], 0)
        if retry:  # a name of its own: the failed run's trial folder (checkpoint, error) stays as it was
            config["pack_key"] = f"{item['pack_key']}-r{retry}"
        return config

    # ------------------------------------------------------------- results
    def on_trial_result(self, trial_id: str, result: dict) -> None:
        item = self.live.get(trial_id)
        if not item:
            return
        if result.get("pack_split"):
            item["split"] = int(result["pack_split"])
            return
        seeds = {m["trial_key"]: m["seed"] for m in item["members"]}
        params = {k: v for k, v in result.items() if k.startswith("params.")}
        for key, rec in records_of(result).items():
            if key not in seeds:
                continue
            self.last[key] = {**rec, **params}
            v = rec.get(self.metrics[0]) if self.metrics else None
            if v is not None:
                self.curves[item["number"]][seeds[key]][int(rec["step"])] = float(v)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        item = self.live.pop(trial_id, None)
        if item is None:
            return
        if result:
            self.live[trial_id] = item
            self.on_trial_result(trial_id, result)
            self.live.pop(trial_id)
        if item.get("split"):
            # The pack trained nothing: its members are still to run, and this is no outcome of theirs.
            self._split(item)
            return
        if error and self.deferring:
            self.errored[trial_id] = item  # the callback settles it: run again, or failed
            return
        self._end(item, error)

    def settle(self, trial_id: str, error_text: str, checkpoint: str | None) -> bool:
        """Decide a failed pack from its error text: True when it runs again (at the front of the queue,
        from ``checkpoint``, else from where it started), False when its members failed."""
        item = self.errored.pop(trial_id, None)
        if item is None:
            return False
        key = item["pack_key"]
        if interrupted(error_text) and self.retries[key] < MAX_RETRIES:
            self.retries[key] += 1
            self.queue.appendleft(dict(item, resume_from=checkpoint or item["resume_from"]))
            return True
        self._end(item, error=True)
        return False

    def _end(self, item: PackItem, error: bool) -> None:
        steps = item["trial"]["train"]["steps"]
        for m in item["members"]:
            last = self.last.get(m["trial_key"])
            if item["number"] in self.groups and m["seed"] in self.groups[item["number"]]:
                continue  # ended in an earlier session (a resumed pack)
            state = "diverged" if last and last.get("event") == "diverged" else final_state(last, steps, error)
            self.groups[item["number"]][m["seed"]] = (state, last)
        self._maybe_tell(item["number"])

    def _told(self, number: int) -> bool:
        return self.storage.get_trial(self._id_of(number)).state.is_finished()

    def _maybe_tell(self, number: int) -> None:
        outcomes = self.groups.get(number, {})
        if len(outcomes) < self.group_size.get(number, len(self.seeds)):
            return
        if self._told(number):
            return
        done = [objective_values(r or {}, self.metrics) for s, r in outcomes.values() if s == "completed"]
        done = [v for v in done if v is not None]
        if done:
            values = [sum(col) / len(col) for col in zip(*done)]
            self._tell(number, values if len(values) > 1 else values[0])
        elif any(s == "pruned" for s, _ in outcomes.values()) and len(self.metrics) == 1:
            # Optuna keeps the intermediate values of a PRUNED trial: report the replicate mean per step.
            per_step: dict[int, list[float]] = defaultdict(list)
            for curve in self.curves[number].values():
                for step, v in curve.items():
                    per_step[step].append(v)
            for step, vs in sorted(per_step.items()):
                self.storage.set_trial_intermediate_value(self._id_of(number), step, sum(vs) / len(vs))
            self._tell(number, state=TrialState.PRUNED)
        else:
            self._tell(number, state=TrialState.FAIL)

    def _tell(self, number: int, values=None, state=None, skip_if_finished: bool = False) -> None:
        # The sampler cannot stop the study here (adapters.without_stop): a grid's last tell would raise.
        self.ot_study.tell(number, values, state=state, skip_if_finished=skip_if_finished)

    def _id_of(self, number: int) -> int:
        """The storage's id of the Optuna trial ``number`` of this study."""
        return self.storage.get_trial_id_from_study_id_trial_number(self.ot_study_id, number)

    # Ray pickles searchers into the experiment directory: keep the database (and its URL) out of it.
    def save(self, checkpoint_path: str) -> None:
        Path(checkpoint_path).write_text("mimax keeps searcher state in the results database\n")

    def restore(self, checkpoint_path: str) -> None:
        raise RuntimeError("restore a mimax study with `mimax resume`, not Tuner.restore")

    def __getstate__(self):
        return {"study_name": self.study_name}
