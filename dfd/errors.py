"""Errors a user causes (a setting that cannot work, a file that is not there), as opposed to bugs.

Every error meant for a user derives from :class:`UserError`: entry points print it as one line
(``error: ...``) and exit 2; anything else keeps its traceback. Each stage keeps its own subclass beside the
code that raises it (``ContractError`` in ``dfd.faces.contract``, ``SchemaError`` in ``dfd.store.schema``,
``ExtractError``, ``ShardError``, ``BundleError``, ...); :func:`user_error` is the one rule the commands use to
tell them from bugs. Raise :class:`ConfigError` for a bad setting or combination of settings (the message names
the key and the fix) and :class:`DatasetError` for a dataset on disk that does not match its layout.

This module imports nothing from dfd: every layer may import it.
"""

from __future__ import annotations

import sys


class UserError(Exception):
    """Something the user can fix: the message is one line saying what, where and how."""


class ConfigError(UserError, ValueError):
    """A config value, or a combination of values, that cannot work (``data.fakes=sbi`` with a clip model)."""


class DatasetError(UserError, ValueError):
    """A dataset on disk does not match what its loader expects (message says what, where, how to fix)."""


#: Errors raised by Python or a dependency that, reaching a command's top level, mean the user's input is wrong:
#: a path that is not there, or a mandatory config value (``???``) left unset. Named here, once, by module and
#: class, so that checking for them imports nothing (Lightning's module alone takes seconds to import).
FOREIGN_USER_ERRORS = (
    ("builtins", "FileNotFoundError"),
    ("builtins", "NotADirectoryError"),
    ("omegaconf.errors", "MissingMandatoryValue"),
    # trainer=gpu on a machine without one, and Lightning's other misuse errors
    ("lightning_fabric.utilities.exceptions", "MisconfigurationException"),
)


def user_error(exc: BaseException) -> BaseException | None:
    """The user-caused error behind ``exc`` (itself, or an exception in its ``__cause__`` chain: Hydra wraps
    errors raised while instantiating), or None when it is a bug."""
    kinds: list[type] = [UserError]
    for module, name in FOREIGN_USER_ERRORS:
        mod = sys.modules.get(module)  # never imported: none of its errors was raised
        if mod is not None and isinstance(getattr(mod, name, None), type):
            kinds.append(getattr(mod, name))
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, tuple(kinds)):
            return seen
        seen = seen.__cause__
    return None


def worker_message(text: str) -> str | None:
    """The original message of an exception re-raised from a torch DataLoader worker, whose text is ``Caught X in
    DataLoader worker process N.`` + the worker's traceback (ending ``module.X: message``); None otherwise."""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    if not lines or not (lines[0].startswith("Caught ") and "worker process" in lines[0]):
        return None
    for i in range(len(lines) - 1, 0, -1):  # the last line at the traceback's left margin: "X: message"
        if not lines[i].startswith(" "):
            name, sep, rest = lines[i].partition(": ")
            return rest.strip() if sep and " " not in name else lines[i].strip()
    return None


def one_line(err: BaseException) -> str:
    """``error: <first line of the message>`` (a mandatory value left unset names the key to add; an error in a
    data-loader worker: the worker's own message, not torch's ``Caught ... in DataLoader worker`` wrapper)."""
    key = getattr(err, "full_key", None)
    if type(err).__name__ == "MissingMandatoryValue" and key:
        return f"error: {key} has no value: add '{key}=<value>' to the command"
    msg = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    msg = worker_message(str(err)) or msg
    if isinstance(err, KeyError) and len(msg) > 1 and msg[0] == msg[-1] == "'":
        msg = msg[1:-1]  # KeyError quotes its message
    return msg if msg.startswith("error") else f"error: {msg}"
