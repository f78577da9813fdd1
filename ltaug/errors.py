"""The one exception type that reaches the user as a message instead of a traceback.

Library code raises `LtaugError` for anything the user can fix (a bad flag, a missing file, a recipe key that
does not exist). The CLI prints the message and exits with status 2 (`LtaugFailure`, a failure of the world rather
than of the input: status 1); Python callers can catch it.
"""


class LtaugError(Exception):
    """A usage or input error. The message names the flag, key or file at fault and says how to fix it."""


class LtaugFailure(LtaugError):
    """Not the input but the world: a download that cannot reach its server, a plan that could not be met. The
    same one-line message (what failed, and how to go on), exit status 1."""

    exit_code = 1
