"""A Ray worker runs trial after trial (Tune's actor reuse). Each trial starts from the same process state,
whatever ran there before, and keeps only what cannot change its numbers: the imports, and each dataset.

``fresh(seed)`` begins every trial: the global RNGs of torch (CPU and GPUs), numpy and Python are seeded with
the trial's seed (a fresh process seeds them at random, so a component that draws from them, as dropout does,
would otherwise not be determined by its seed), torch's thread count is put back to the process's first, the
component registries to the built-ins (the config's plugins register again when it is resolved), and
torch.compile's caches are dropped (a reused process would otherwise stop compiling at its cache limit and
run eagerly).

``dataset(cls, params, device)`` builds a dataset once per worker process, data config and device, and hands
the same read-only object to the later trials (a dataset is already shared by a pack's replicates). The last
``KEEP`` datasets are kept; a file changed while the worker lives is not read again.
"""

from __future__ import annotations

import random
import sys
from collections import OrderedDict

import numpy as np
import torch

from mimax.trainables import plugins
from mimax.trainables.data import Views

KEEP = 2  # datasets kept per process (MNIST as float32 is 0.2 GB)

_threads: int | None = None  # torch's thread count before the first trial (Ray sets it from the trial's CPUs)
_datasets: OrderedDict[tuple, Views] = OrderedDict()


def fresh(seed: int) -> None:
    """Start a trial of ``seed`` from the same state in every process (call it first in every trial)."""
    global _threads
    if _threads is None:
        _threads = torch.get_num_threads()
    elif torch.get_num_threads() != _threads:
        torch.set_num_threads(_threads)
    plugins.reset()
    if "torch._dynamo" in sys.modules:
        torch.compiler.reset()
    if torch.cuda.is_initialized():  # the last trial's cached blocks would count as used in the memory check
        torch.cuda.empty_cache()
    torch.manual_seed(seed)  # every device's generator
    np.random.seed(seed % 2**32)
    random.seed(seed)


def dataset(cls: type[Views], params, device: torch.device | str) -> Views:
    """``cls(params, device)``, built once per process for each (class, params, device)."""
    key = (cls, params.model_dump_json(), str(device))
    views = _datasets.get(key)
    if views is None:
        views = cls(params, device)
        _datasets[key] = views
        while len(_datasets) > KEEP:
            _datasets.popitem(last=False)
    _datasets.move_to_end(key)
    return views
