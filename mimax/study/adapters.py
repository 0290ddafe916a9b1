"""Where mimax leans on Optuna's and Ray's behaviour beyond what their APIs promise: each touch is here,
with why no public route exists, and tests/study/test_adapters.py checks the behaviour it relies on, so
that an Optuna or Ray that changes it fails there, loudly, not in a study. tests/test_private_apis.py
lists the private names used here and fails on one used anywhere else in mimax."""

from __future__ import annotations

from typing import Callable

__all__ = ["scrub_ray_entrypoint", "without_stop"]


class _Unstoppable:
    """A study as a sampler's after_trial sees it, except that ``stop()`` does nothing."""

    def __init__(self, study):
        self.study = study

    def __getattr__(self, name: str):
        return getattr(self.study, name)

    def stop(self) -> None:
        pass


def without_stop(sampler):
    """``sampler`` whose ``after_trial`` cannot stop the study (public API only: the hook, and the study
    it is handed). Optuna's GridSampler and BruteForceSampler call ``study.stop()`` there once their space
    is exhausted, and ``Study.stop`` raises outside ``Study.optimize``: a study driven by ask and tell, as
    Ray Tune drives mimax's, could not tell its last trial. mimax, not the sampler, ends a study."""
    after_trial = sampler.after_trial

    def after_trial_without_stop(study, trial, state, values):
        after_trial(_Unstoppable(study), trial, state, values)

    sampler.after_trial = after_trial_without_stop
    return sampler


def scrub_ray_entrypoint(scrub: Callable[[str], str]) -> None:
    """Make the entrypoint that ``ray.init`` records for the driver's job (its command line, read from the
    OS, so a `--db` password typed there) pass through ``scrub``. No public route: Ray takes the command
    line from psutil inside ``ray.init`` (``ray._private.worker.init`` calls
    ``ray._private.utils.get_entrypoint_name()``), with no argument or setting to give another; the job
    table keeps it (dashboard, `ray list jobs`, GCS's Redis)."""
    import ray._private.utils as ray_utils

    original = ray_utils.get_entrypoint_name
    if not getattr(original, "mimax_scrubbed", False):
        def entrypoint() -> str:
            return scrub(original())

        entrypoint.mimax_scrubbed = True
        ray_utils.get_entrypoint_name = entrypoint
