"""Launch and resume studies: Ray Tune runs the trials, Optuna picks them, the store keeps everything."""

from __future__ import annotations

import contextlib
import math
import os
import signal
import socket
import sys
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path

from mimax.contract import INT_MAX
from mimax.storage.db import TERMINAL, check_study_name, choose_url
from mimax.errors import ConfigError

DEFAULT_RESULTS = "mimax-results"


@dataclass
class RunOptions:
    address: str | None = None
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    max_concurrent: int | None = None
    scheduler: str = "none"
    quiet: bool = False
    pack: int | str = "auto"  # seed replicates per Ray trial
    reuse_workers: bool = True  # Tune's actor reuse: a worker process runs trial after trial
    trainable: str = "mimax"  # or "null": reports without training (tune_adapter.null_trial), to measure the driver

    def check(self) -> None:
        """Refuse what no cluster could run, before anything is opened or written (the cluster's own
        limits are checked once it is joined: ``cluster.check_resources``)."""
        from mimax.study import cluster

        if not (math.isfinite(self.cpus_per_trial) and self.cpus_per_trial > 0):
            raise ConfigError("--cpus-per-trial", f"expected a number > 0, got {self.cpus_per_trial:g}")
        if not (math.isfinite(self.gpus_per_trial) and self.gpus_per_trial >= 0):
            raise ConfigError("--gpus-per-trial", f"expected a number ≥ 0, got {self.gpus_per_trial:g}")
        if self.pack != "auto" and (not isinstance(self.pack, int) or self.pack < 1):
            raise ConfigError("--pack", f"expected a whole number ≥ 1 or auto, got {self.pack!r}")
        if self.max_concurrent is not None and self.max_concurrent < 1:
            raise ConfigError("--max-concurrent", f"expected a whole number ≥ 1, got {self.max_concurrent}")
        if self.trainable not in ("mimax", "null"):
            raise ConfigError("--trainable", f"expected mimax or null, got {self.trainable!r}")
        if self.scheduler not in ("none", "asha"):
            raise ConfigError("--scheduler", f"expected none or asha, got {self.scheduler!r}")
        if self.address is not None:  # --address "" is a mistake, not a request for a local cluster
            cluster.parse_address(self.address)


def driver_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def owner_alive(owner: str) -> bool:
    """A lease held by a dead process on this host is free; on another host only staleness frees it."""
    host, _, rest = owner.partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname() or not pid.isdigit():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Interrupted(KeyboardInterrupt):
    """A Ctrl-C that ended a driver outside Tune's graceful stop (a second one, or before Tune ran): its
    message names the study's resume (mimax.cli prints it)."""


def interrupted_line(summary: dict) -> str:
    done = sum(summary["states"].get(s, 0) for s in TERMINAL)
    return (f"interrupted: study {summary['name']} stopped with {done} of {summary['total']} trials done; "
            f"run `mimax resume {summary['name']}` to finish it")


def driver_gone(study: dict, now=None):
    """When the driver of a study that says it is running went away (its last heartbeat), or None while
    one runs it (or none should). Gone: its process is no longer on this host, or its lease is older
    than LEASE_TIMEOUT_S (a driver on another host, or one that cannot reach the database)."""
    from mimax.storage.models import utcnow
    from mimax.storage.store import LEASE_TIMEOUT_S

    owner, beat = study.get("driver_owner"), study.get("driver_heartbeat_at")
    if study.get("status") != "running" and not owner:
        return None
    if not owner:  # running, and no lease: the driver died between two writes of its end
        return study.get("updated_at")
    stale = beat is None or ((now or utcnow()) - beat).total_seconds() >= LEASE_TIMEOUT_S
    if stale or not owner_alive(owner):
        return beat or study.get("updated_at")
    return None


def _space_for_scheduler(space, scheduler: str):
    if scheduler == "none":
        return None
    if len(space.metrics) != 1:
        raise ConfigError("--scheduler", "asha needs a single objective; this space has "
                                         f"{len(space.metrics)}")
    return space.metrics[0], ("max" if space.directions[0] == "maximize" else "min")


def _configs_total(space) -> int:
    n = space.trials if space.trials is not None else space.n_configs
    if n is None:
        raise ConfigError("trials", "a sampled space needs a number of trials")
    return int(n)


def launch(space_ref: str, name: str, *, budget: str | None, db: str | None, results_dir: str | None,
           opts: RunOptions) -> dict:
    from mimax.search_spaces import load_space
    from mimax.storage.store import Store, StudyExists

    check_study_name(name)
    opts.check()
    results = _results_dir(DEFAULT_RESULTS if results_dir is None else results_dir)
    space = load_space(space_ref, budget)
    sched = _space_for_scheduler(space, opts.scheduler)
    url = choose_url(db)
    store = Store(url)
    if store.get_study(name) is not None:
        raise StudyExists(f"study {name!r} already exists in {store.display_url}; use `mimax resume {name}`")
    _connect(opts, store)  # before anything is written: a bad address leaves nothing behind
    source = space_ref if not os.path.exists(space_ref) else str(Path(space_ref).resolve())
    import optuna

    optuna_name = f"mimax:{name}"
    optuna.create_study(study_name=optuna_name, storage=store.optuna_storage(), directions=space.directions)
    try:
        store.create_study(
            name, space_source=source, space_json=space.to_dict(), space_fingerprint=space.fingerprint(),
            budget=space.budget, sampler=space.sampler.name, directions=list(space.directions),
            metrics=list(space.metrics), seeds=len(space.seed_values()), n_configs_requested=_configs_total(space),
            optuna_study_name=optuna_name, results_dir=results,
        )
    except StudyExists:
        raise
    except BaseException:
        optuna.delete_study(study_name=optuna_name, storage=store.optuna_storage())
        raise
    return _run(store, name, space, opts, sched, session=0)


def resume(name: str, *, db: str | None, add_trials: int, results_dir: str | None, opts: RunOptions) -> dict:
    from mimax.storage.store import Store

    opts.check()
    if not 0 <= add_trials <= INT_MAX:
        raise ConfigError("--add-trials", f"expected a whole number from 0 to {INT_MAX}, got {add_trials}")
    results = _results_dir(results_dir) if results_dir is not None else None
    store = Store(choose_url(db), create=False)
    study = store.require_study(name)
    space = _study_space(study)
    sched = _space_for_scheduler(space, opts.scheduler)
    if add_trials and space.exhaustive:
        raise ConfigError("--add-trials", f"{name!r} enumerates a grid of {space.n_configs} configurations; "
                                          "extend a sampled space instead")
    _connect(opts, store)
    if results:
        store.update_study(name, results_dir=results)
    if add_trials:
        store.update_study(name, n_configs_requested=study["n_configs_requested"] + add_trials)
    sessions = 1 + max((e["session"] for e in store.environments(name)), default=0)
    total = store.require_study(name)["n_configs_requested"] * len(space.seed_values())
    done = sum(store.state_counts(name)[s] for s in TERMINAL)
    print(f"resuming {name}: {done} of {total} done, {total - done} to run", file=sys.stderr, flush=True)
    return _run(store, name, space, opts, sched, session=sessions)


def _study_space(study: dict):
    """The space a study runs, with the seeds it has now (``extend`` may have added some); refused when
    its file changed since the launch."""
    from mimax.search_spaces import load_space

    space = load_space(study["space_source"], study["budget"])
    space.seeds = int(study["seeds"])
    if space.fingerprint() != study["space_fingerprint"]:
        raise ConfigError("space", f"{study['space_source']} changed since study {study['name']!r} was launched "
                                   "(its fingerprint differs); launch a new study for the new space")
    return space


def extend(name: str, *, db: str | None, seeds: int, configs: list[str] | None = None,
           results_dir: str | None = None, opts: RunOptions) -> dict:
    """Give configurations of study ``name`` (``configs``: replicate groups, default every one) the
    seeds 0..seeds−1 they lack, as new trials of the same configurations, then run the study as a
    resume would. Idempotent: a trial key (configuration, seed) is written once, so an extension
    interrupted and run again loses and duplicates nothing."""
    from mimax.storage.store import Store

    opts.check()
    if not 1 <= seeds <= INT_MAX:
        raise ConfigError("seeds", f"expected a whole number ≥ 1, got {seeds}")
    store = Store(choose_url(db), create=False)
    study = store.require_study(name)
    space = _study_space(study)
    sched = _space_for_scheduler(space, opts.scheduler)
    rows = store.trials(name)
    groups: dict[str, dict] = {}
    for row in rows:
        groups.setdefault(row["replicate_group"], row)
    wanted = list(groups) if configs is None else configs
    unknown = [c for c in wanted if c not in groups]
    if unknown:
        raise ConfigError("configs", f"study {name!r} has no configuration {unknown[0]!r} "
                                     f"(configurations: {', '.join(sorted(groups))})")
    have = {(r["replicate_group"], r["seed"]) for r in rows}
    new = []
    for group in wanted:
        row = groups[group]
        for seed in range(seeds):
            if (group, seed) not in have:
                config = dict(row["config"], seed=seed)
                new.append({"trial_key": f"c{row['optuna_trial_number']:04d}-s{seed}", "config": config,
                            "seed": seed, "replicate_group": group, "replicate_index": seed,
                            "optuna_trial_number": row["optuna_trial_number"]})
    _connect(opts, store)
    store.add_trials(name, new)
    if seeds > space.seeds:
        space.seeds = seeds
        store.update_study(name, seeds=seeds, space_fingerprint=space.fingerprint())
    if results_dir:
        store.update_study(name, results_dir=_results_dir(results_dir))
    sessions = 1 + max((e["session"] for e in store.environments(name)), default=0)
    return _run(store, name, space, opts, sched, session=sessions)


def _results_dir(given: str) -> str:
    """``given`` as an absolute path, if a folder can be made and written there (Ray makes it later,
    when a failure would leave a study behind)."""
    if not given:
        raise ConfigError("--results-dir", "an empty path")
    try:
        path = Path(given).expanduser().resolve()
        str(path).encode("utf-8")
        base = next(p for p in (path, *path.parents) if p.exists())  # too long a name raises here
    except (OSError, RuntimeError, ValueError) as exc:
        raise ConfigError("--results-dir", f"not a usable path, got {given!r} ({exc})") from None
    if not base.is_dir():
        raise ConfigError("--results-dir", f"{base} is a file, not a folder")
    if not os.access(base, os.W_OK | os.X_OK):
        raise ConfigError("--results-dir", f"cannot write in {base}")
    return str(path)


def _connect(opts: RunOptions, store) -> None:
    import optuna

    from mimax.study import cluster

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    cluster.connect(opts.address, scrub=store.scrub)
    cluster.check_resources(opts.cpus_per_trial, opts.gpus_per_trial)


def _run(store, name: str, space, opts: RunOptions, sched, session: int) -> dict:
    from ray import tune

    from mimax.study.callback import KEEP_CHECKPOINTS, StoreCallback, StoreWriter
    from mimax.study.environment import collect_environment
    from mimax.study.progress import StudyProgress
    from mimax.study.searcher import StudySearcher
    from mimax.trainables.tune_adapter import null_trial, tune_trial

    owner = driver_owner()
    store.claim_driver(name, owner, alive=owner_alive)
    writer = None
    try:
        study = store.require_study(name)
        store.update_study(name, status="running")
        store.record_environment(name, collect_environment("cuda" if opts.gpus_per_trial else "cpu"), session)
        searcher = StudySearcher(store=store, study=study, space=space, target_configs=study["n_configs_requested"],
                                 session=session, pack=opts.pack, trial_gpus=opts.gpus_per_trial)
        counts = store.state_counts(name)
        # what runs: the trials written (some configurations may have more seeds: extend), and the
        # configurations not yet asked for, each with the space's seeds
        total = sum(counts.values()) + max(0, study["n_configs_requested"] - len(searcher.group_size)) * space.seeds
        done = sum(counts[s] for s in TERMINAL)
        writer = StoreWriter(store, name, owner)
        writer.start()
        progress = None
        if not opts.quiet:  # the study's best so far, not this session's: a resume goes on from it
            best = store.best(name)
            progress = StudyProgress(name, total, done, space.metrics[0] if space.metrics else None,
                                     space.directions[0] if space.directions else None,
                                     best=None if best is None else best["value"])
        callback = StoreCallback(writer, progress, searcher)  # before remaining(): retries count
        scheduler = None
        tune_kwargs = {}
        if sched:
            from ray.tune.schedulers import ASHAScheduler

            metric, mode = sched
            # A pack that split reports no objective; without this Tune would take that for a bug.
            os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")
            steps, every = _steps_and_every(space)
            scheduler = ASHAScheduler(time_attr="step", max_t=steps, grace_period=every, reduction_factor=2)
            tune_kwargs = {"metric": metric, "mode": mode}
        remaining = searcher.remaining()
        if remaining > 0:
            function = tune_trial if opts.trainable == "mimax" else null_trial
            trainable = tune.with_resources(function, {"cpu": opts.cpus_per_trial, "gpu": opts.gpus_per_trial})
            tuner = tune.Tuner(
                trainable,
                tune_config=tune.TuneConfig(
                    search_alg=searcher, scheduler=scheduler, num_samples=remaining,
                    max_concurrent_trials=opts.max_concurrent, reuse_actors=opts.reuse_workers,
                    trial_name_creator=lambda t: t.config["pack_key"],
                    trial_dirname_creator=lambda t: t.config["pack_key"],
                    **tune_kwargs,
                ),
                run_config=tune.RunConfig(
                    name=f"{_safe(name)}-session{session}", storage_path=study["results_dir"],
                    callbacks=[callback], verbose=0,
                    checkpoint_config=tune.CheckpointConfig(num_to_keep=KEEP_CHECKPOINTS),
                    failure_config=tune.FailureConfig(max_failures=0),
                ),
            )
            main = threading.current_thread() is threading.main_thread()
            handler = signal.getsignal(signal.SIGINT) if main else None
            try:
                with progress or contextlib.nullcontext():
                    tuner.fit()
            finally:
                if main:  # Tune leaves its own SIGINT handler behind after a run that was not interrupted
                    signal.signal(signal.SIGINT, handler)
        writer.stop()
        counts = store.state_counts(name)
        finished = sum(counts[s] for s in TERMINAL)
        status = "completed" if finished >= total else "interrupted"
        store.update_study(name, status=status)
        return {"name": name, "status": status, "total": total, "states": counts,
                "interrupted": callback.interrupted and status == "interrupted"}
    except KeyboardInterrupt:
        counts = store.state_counts(name)
        total = store.require_study(name)["n_configs_requested"] * len(space.seed_values())
        raise Interrupted(interrupted_line({"name": name, "total": total, "states": counts})) from None
    finally:
        # A driver that stops on its own (Ctrl-C, an error) hands its unfinished trials back: they are
        # pending again until a resume. (After SIGKILL resume treats 'running' the same way.)
        if writer is not None and writer.thread.is_alive():  # failed under Tune: stop it before the lease
            with contextlib.suppress(Exception):             # goes, or it logs LeaseLost every beat
                writer.stop()
        try:
            for t in store.trials(name, states=["running"]):
                store.update_trial(name, t["trial_key"], state="pending")
            if store.require_study(name)["status"] == "running":
                store.update_study(name, status="interrupted")
        finally:
            store.release_driver(name, owner)


def _steps_and_every(space) -> tuple[int, int]:
    """Training steps and evaluation interval of the space's trials (ASHA's max_t and grace period)."""
    configs = space.enumerate() or []
    train = configs[0]["train"] if configs else space.base.get("train", {})
    evaluation = configs[0]["eval"] if configs else space.base.get("eval", {})
    if "steps" not in train or "every" not in evaluation:
        raise ConfigError("--scheduler", "asha needs train.steps and eval.every fixed in the space's base")
    return int(train["steps"]), int(evaluation["every"])


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
