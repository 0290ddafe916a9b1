"""Shared by the search-space tests: a small valid space on digits, and the CLI entry point."""

from __future__ import annotations

import argparse
import copy
import sys

import yaml

from mimax.errors import ConfigError

# A valid sampled space with conditionals, cheap to validate (digits, few steps).
VALID = {
    "name": "test-space",
    "description": "a small sampled space",
    "base": {
        "data": {"name": "digits"},
        "encoder": {"name": "mlp", "hidden": [32], "out_dim": 16},
        "train": {"steps": 5, "batch_size": 32},
        "eval": {"every": 5, "probe": {"name": "torch"}},
    },
    "params": {
        "critic.name": {"choice": ["bilinear", "separable", "concat"]},
        "critic.hidden": {"int": [16, 512], "log": True, "when": {"critic.name": ["separable", "concat"]}},
        "estimator.name": {"choice": ["nce", "nwj"]},
        "train.lr": {"float": [1.0e-5, 1.0e-3], "log": True},
    },
    "seeds": 3,
    "sampler": {"name": "tpe", "seed": 0},
    "objectives": [{"metric": "probe_accuracy", "direction": "maximize"}],
    "trials": 10,
    "budgets": {"smoke": {"set": {"train.steps": 2}, "seeds": 1}},
}


def valid() -> dict:
    return copy.deepcopy(VALID)


def write(tmp_path, raw, name="space.yaml") -> str:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return str(path)


def run_cli(argv: list[str]) -> int:
    """``mimax <argv>`` through the main CLI once ``spaces`` is wired into it, else through ``register``
    on a parser that handles errors the way the main CLI does (one line, exit 2)."""
    from mimax import cli

    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    if "spaces" in sub.choices:
        return cli.main(argv)
    from mimax.search_spaces.cli import register

    parser = argparse.ArgumentParser(prog="mimax")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"mimax: error: {exc}", file=sys.stderr)
        return 2
