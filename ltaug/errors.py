"""The one exception type that reaches the user as a message instead of a traceback.

Library code raises `LtaugError` for anything the user can fix (a bad flag, a missing file, a recipe key that
does not exist). The CLI prints the message and exits with status 2; Python callers can catch it.
"""


class LtaugError(Exception):
    """A usage or input error. The message names the flag, key or file at fault and says how to fix it."""
