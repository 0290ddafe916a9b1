"""The command line: ``mimax train | spaces | launch | resume | status | list | db | analyze | export |
compare``. Each command group registers its commands (``register(subparsers)``); bad input is one line on
stderr and exit code 2."""

from __future__ import annotations

import argparse
import sys
from typing import Callable

from mimax.errors import ConfigError

EXIT_BAD_INPUT = 2


def build_parser() -> argparse.ArgumentParser:
    from mimax.analysis import cli as analysis
    from mimax.search_spaces import cli as spaces
    from mimax.study import cli as study
    from mimax.trainables import cli as trainables

    parser = argparse.ArgumentParser(
        prog="mimax", description="Run and analyse studies of MI-maximising representation learning.")
    sub = parser.add_subparsers(dest="command", required=True)
    for group in (trainables, spaces, study, analysis):
        group.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable = args.func
    try:
        return func(args)
    except ConfigError as exc:  # bad input, a database problem included (mimax.db.DatabaseError)
        print(f"mimax: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("mimax: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
