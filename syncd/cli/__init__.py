"""The ``syncd`` command line.

``syncd --config F`` runs the daemon; ``--once`` runs one cycle (exit 0 in sync, 1 on any
failure); ``syncd plan`` (``--once --dry-run``) prints the plan and writes nothing (exit 0
nothing to do, 2 changes pending, 1 error). ``check``, ``doctor``, ``names``, ``import``,
``schema``, ``version`` and ``completion`` are the other commands. A usage error (an unknown
or misplaced flag) exits 64, a code of its own, so ``syncd plan || test $? -eq 2`` can't pass
on a typo. Every failure ends in ``error: ...`` and an exit code, never a traceback.

The grammar is in ``parser``, the commands in ``commands``, what they print in ``output``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from syncd.cli.parser import (
    EXIT_CHANGES,
    EXIT_ERROR,
    EXIT_OK,
    EXIT_USAGE,
    UsageError,
    build_parser,
    complete_if_asked,
    parse,
    print_usage_error,
)
from syncd.errors import SyncdError

__all__ = [
    "EXIT_CHANGES",
    "EXIT_ERROR",
    "EXIT_OK",
    "EXIT_USAGE",
    "build_parser",
    "main",
]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``syncd`` console script: every failure is one ``error:`` line."""
    complete_if_asked()
    try:
        try:
            invocation = parse(list(sys.argv[1:] if argv is None else argv))
        except UsageError as exc:
            return print_usage_error(exc)
        except SystemExit as exc:  # --help printed
            return int(exc.code or 0)
        # imported only now: --help and a usage error don't pay for every command's imports
        from syncd.cli.commands import dispatch

        return dispatch(invocation)
    except BrokenPipeError:
        # the reader went away (syncd schema | head): not an error of ours; keep Python from
        # complaining again while it flushes stdout at exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except KeyboardInterrupt:
        return 130
    except SyncdError as exc:
        from syncd.redact import REDACTOR

        print(f"error: {REDACTOR.redact(str(exc))}", file=sys.stderr)
        return EXIT_ERROR
    except Exception as exc:  # a bug must still end in one line, never quoting a value
        import logging

        from syncd.redact import REDACTOR

        logging.getLogger("syncd").debug("internal error", exc_info=True)
        detail = REDACTOR.redact(f"{type(exc).__name__}: {exc}")
        print(
            f"error: internal error ({detail}); run with --log-level debug for the traceback",
            file=sys.stderr,
        )
        return EXIT_ERROR
