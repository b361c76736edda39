"""Errors a user can cause. The CLI prints these as one line and exits non-zero."""


class UserError(Exception):
    """Bad input from the user: a missing file, a bad flag value, a broken run directory.

    Anything raised as UserError is reported as `makemore: error: <message>` with no
    traceback; every other exception is a bug in makemore and keeps its traceback.
    """
