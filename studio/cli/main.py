"""`llm-studio`'s entry point: parse, run the subcommand, and turn a StudioError into one line and exit 2."""

from __future__ import annotations

import sys

from studio.cli.commands import COMMANDS
from studio.cli.parser import build_parser
from studio.errors import StudioError


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except StudioError as error:
        print(f"llm-studio: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("llm-studio: interrupted", file=sys.stderr)
        return 130
