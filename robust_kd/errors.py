"""Errors that reach the user as one line, never as a traceback."""


class UserError(Exception):
    """Bad input from the user: a wrong name, a missing file, a bad value.

    The message must say what is wrong and what to do; the CLI prints it on one line and exits 2.
    """

    exit_code = 2
