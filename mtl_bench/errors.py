"""Errors the user can fix: the CLI prints them on one line and exits with code 2."""


class UserInputError(ValueError):
    """Bad input from a user: an unknown name, a missing column, an invalid value.

    The message is one line that names the offending thing and, where there is a
    closed set, the valid choices.
    """
