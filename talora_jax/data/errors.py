"""Errors of the data layer.

Every user mistake (a typo in a task name, a dataset that was never downloaded, a
bad JSONL line, a k too large for few-shot) raises a subclass of ``DataError`` with
a message that says what was wrong and how to fix it, so the launcher can print the
message without a traceback dump (DESIGN.md section 8).
"""

from __future__ import annotations


class DataError(ValueError):
    """Base class of all user-facing data errors."""


class UnknownTaskError(DataError, KeyError):
    """A task name that is not registered."""

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0]) if self.args else ""


class SplitNotFoundError(DataError):
    """A split that a task does not have."""


class DataNotFoundError(DataError):
    """Raw data (TFDS or a user file) that is not on disk."""


class DataFormatError(DataError):
    """A malformed user data file (bad JSON, missing field, empty file)."""


class FewShotError(DataError):
    """A few-shot request the training set cannot satisfy."""
