"""The command line: ``mimax train | ...``. Bad input is one line on stderr and exit code 2."""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Callable

from mimax.errors import ConfigError

EXIT_BAD_INPUT = 2


def _train(args) -> int:
    from mimax.trainables.cli import train_command

    return train_command(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mimax", description="Run and analyse studies of MI-maximising representation learning.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train one trial from a YAML config")
    p.add_argument("config", help="trial config (YAML)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set encoder.name=convnet (repeatable)")
    p.add_argument("--json", action="store_true", help="print only JSON lines on stdout")
    p.add_argument("--checkpoint", metavar="PATH",
                   help="save a checkpoint after every evaluation; continue from it if it exists")
    p.set_defaults(func=_train)

    from mimax.search_spaces.cli import register as register_spaces

    register_spaces(sub)

    from mimax.study.cli import register as register_study

    register_study(sub)

    from mimax.analysis.cli import register as register_analysis

    register_analysis(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable = args.func
    try:
        return func(args)
    except ConfigError as exc:
        print(f"mimax: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except Exception as exc:
        from mimax.study.store import StoreError

        if isinstance(exc, StoreError):
            print(f"mimax: error: {exc}", file=sys.stderr)
            return EXIT_BAD_INPUT
        raise
    except KeyboardInterrupt:
        print("mimax: interrupted", file=sys.stderr)
        return 130


def _finite(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None  # strict JSON has no NaN or inf
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def emit_json(record: dict) -> None:
    print(json.dumps(_finite(record), allow_nan=False), flush=True)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
