"""Shared plumbing for dfd's argparse entry points (dfd-export, dfd-predict, dfd-report, dfd-weights,
dfd-sbi-grid): the same one-line errors and exit status 2 as the Hydra commands (dfd/cli/_hydra.py)."""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator
from typing import NoReturn

from dfd.errors import UserError, one_line, user_error


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose usage errors are one line (``error: <what> (see dfd-x --help)``), exit status 2.

    argparse's own report is two lines, the usage (often wrapped over several) and ``prog: error: ...``.
    """

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"error: {message} (see {self.prog} --help)\n")
        raise SystemExit(2)


def fail(err: BaseException | str) -> NoReturn:
    """Print a user error as dfd's one line and exit 2."""
    print(one_line(UserError(err) if isinstance(err, str) else err), file=sys.stderr)
    raise SystemExit(2)


@contextlib.contextmanager
def user_errors(but: type[BaseException] | tuple[type[BaseException], ...] = ()) -> Iterator[None]:
    """User errors raised inside (:func:`dfd.errors.user_error`, the one rule) -> one line, exit 2; bugs keep
    their traceback, and so do the errors ``but`` names (the command reports those itself)."""
    try:
        yield
    except Exception as exc:
        user = user_error(exc)
        if user is None or isinstance(exc, but):
            raise
        fail(user)
