"""Errors a user causes (a setting that cannot work, a file that is not there), as opposed to bugs.

Entry points print a `UserError` as one line (``error: ...``) and exit 2; anything else keeps its traceback.
Raise `ConfigError` for a bad setting or combination of settings; the message names the key and the fix.
"""

from __future__ import annotations


class UserError(Exception):
    """Something the user can fix: the message is one line saying what, where and how."""


class ConfigError(UserError, ValueError):
    """A config value, or a combination of values, that cannot work (``data.fakes=sbi`` with a clip model)."""
