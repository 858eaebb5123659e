"""One exception family for the whole library.

Every error a user can cause (a bad file, a wrong CRS, an empty cloud, a malformed
event) is a :class:`TwinError`. Errors about a file name that file in their message.
"""

from __future__ import annotations

import os


class TwinError(Exception):
    """Base class of every error twin raises on purpose."""

    def __init__(self, message: str, *, path: str | os.PathLike | None = None):
        self.path = os.fspath(path) if path is not None else None
        self.reason = message
        super().__init__(f"{self.path}: {message}" if self.path else message)


class InputError(TwinError):
    """An input file or array is missing, unreadable, corrupt or inconsistent."""


class CRSError(TwinError):
    """A coordinate reference system is unknown, unusable or inconsistent."""


class ParameterError(TwinError, ValueError):
    """A parameter is out of range or inconsistent with another."""


class OutputError(TwinError):
    """An output cannot be written (or would overwrite something it must not)."""
