"""`llm-studio`'s entry point: tidy the home (studio.housekeeping), run the subcommand, and turn a StudioError or
an operating-system error into one line and exit 2."""

from __future__ import annotations

import sys

from studio.cli.commands import COMMANDS
from studio.cli.parser import build_parser
from studio.errors import StudioError, os_error_line
from studio.housekeeping import remove_debris


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        remove_debris()
        return COMMANDS[args.command](args)
    except StudioError as error:
        print(f"llm-studio: error: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # a permission, a full disk, a read-only or missing home: one line, no traceback
        print(f"llm-studio: error: {os_error_line(error)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("llm-studio: interrupted", file=sys.stderr)
        return 130
