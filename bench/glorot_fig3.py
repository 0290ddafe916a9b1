"""A diagnostic for docs/REPRODUCTION.md (Fig. 3): does the initialisation explain the NWJ bound ordering?

The paper's notebook builds its layers with TensorFlow's defaults: Glorot-uniform weights, zero biases.
mimax uses PyTorch's (U(±1/sqrt(fan_in)) weights and biases), 1.7-2.4x narrower for these sizes. This trains
fig3-nwj-21k's configuration (MLP encoder x CRITIC x NWJ, 21,000 steps, K = 128, lr 1e-4) from seed SEED with
every weight re-drawn Glorot-uniform and every bias zeroed, and prints its evaluations as JSON lines.

    .venv/bin/python bench/glorot_fig3.py CRITIC [SEED] [--every 7000] [--torch-init]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mimax.trainables.loop import Trainer  # noqa: E402


def glorot(module: torch.nn.Module) -> None:
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith("bias"):
                p.zero_()
            elif p.dim() == 2:  # nn.Linear (out, in) and the bilinear critic's W (d_u, d_v): symmetric bound
                torch.nn.init.xavier_uniform_(p)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("critic")
    ap.add_argument("seed", type=int, nargs="?", default=0)
    ap.add_argument("--every", type=int, default=7000)
    ap.add_argument("--steps", type=int, default=21000)
    ap.add_argument("--torch-init", action="store_true", help="keep PyTorch's initialisation (the control)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    cfg = {"data": {"name": "mnist"}, "encoder": {"name": "mlp"}, "critic": {"name": args.critic},
           "estimator": {"name": "nwj"}, "train": {"steps": args.steps, "batch_size": 128, "lr": 1e-4},
           "eval": {"every": args.every, "probe": "torch"}, "seed": args.seed}
    trainer = Trainer(cfg)
    if not args.torch_init:
        torch.manual_seed(args.seed)
        for name in ("g1", "g2", "critic"):
            glorot(trainer.stacks[name].module)  # a lone trial's stacks are its plain modules
    for (rec,) in trainer.run():
        print(json.dumps({"critic": args.critic, "seed": args.seed, "init": "torch" if args.torch_init else "glorot",
                          **{k: rec.get(k) for k in ("step", "bound_test", "bound_train", "probe_accuracy")}}),
              flush=True)


if __name__ == "__main__":
    main()
