"""Errors the CLI prints on one line: input the user can fix (exit 2), and runs stopped by their surroundings
(exit 1)."""


class UserInputError(ValueError):
    """Bad input from a user: an unknown name, a missing column, an invalid value.

    The message is one line that names the offending thing and, where there is a
    closed set, the valid choices.
    """


class RunStopped(RuntimeError):
    """A run stopped by something outside its input: a lost Dask scheduler, work whose workers kept dying.

    The run directory's manifest says ``failed`` with this one-line message; ``--resume`` continues the run.
    """
