"""The command line: ``mimax train | spaces | launch | resume | status | list | db | analyze | export |
compare | verify | decide``. Each command group registers its commands (``register(subparsers)``); bad input is one line on
stderr and exit code 2."""

from __future__ import annotations

import argparse
import os
import sys

from mimax.errors import ConfigError

EXIT_BAD_INPUT = 2


def one_line(text: str) -> str:
    """``text`` with line breaks and other unprintable characters escaped: an error stays one line
    whatever the user typed into it."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (``mimax: error: launch: ...``) and exit code 2, like every
    other bad input; ``--help`` still shows the usage. Subparsers inherit the class."""

    def error(self, message: str):
        command = self.prog.partition(" ")[2]  # "mimax db upgrade" -> "db upgrade"
        self.exit(EXIT_BAD_INPUT, f"mimax: error: {command + ': ' if command else ''}{one_line(message)}\n")


def build_parser() -> argparse.ArgumentParser:
    from mimax.analysis import cli as analysis
    from mimax.search_spaces import cli as spaces
    from mimax.study import cli as study
    from mimax.study import decide
    from mimax.trainables import cli as trainables

    parser = Parser(
        prog="mimax", description="Run and analyse studies of MI-maximising representation learning.")
    sub = parser.add_subparsers(dest="command", required=True)
    for group in (trainables, spaces, study, analysis, decide):
        group.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as exc:  # bad input, a database problem included (mimax.storage.db.DatabaseError)
        print(f"mimax: error: {one_line(str(exc))}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt as exc:  # a study's driver says what to resume (study.engine.Interrupted)
        print(f"mimax: {one_line(str(exc)) or 'interrupted'}", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `mimax spaces show NAME | head`: the reader left; nothing more to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit's flush
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
