"""One exception type for every mistake a user can fix.

The CLI catches :class:`CodetteError` and prints its message without a traceback; anything else is a
bug and keeps its traceback.
"""


class CodetteError(Exception):
    """A user-facing error: the message says what is wrong and where (file, line or field)."""


class TrainingInterrupted(CodetteError):
    """Ctrl-C during training: a checkpoint was saved; the message says where (the CLI exits 130)."""
