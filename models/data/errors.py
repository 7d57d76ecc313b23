"""The error and the per-file report entry shared by every importer."""
from __future__ import annotations

from dataclasses import dataclass

from models.errors import InvalidInput


class DatasetError(InvalidInput):
    """An image set that cannot be imported or used; the message says what to fix (a ValueError, as before)."""


@dataclass(frozen=True)
class SkippedFile:
    """A file left out of an import, by its original relative path, with the reason (shown to the user)."""

    path: str
    reason: str
