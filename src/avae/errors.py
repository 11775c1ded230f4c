"""User-facing errors.

Anything a person can fix (a bad file, a wrong field, an unwritable folder) raises
:class:`AvaeError` with one line that names the file or field and says what was expected.
The CLI prints that line and exits with code 2; a traceback means a bug in avae.
"""


class AvaeError(Exception):
    """An error caused by input the user can correct. ``str(err)`` is a single line."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))
