"""The domain errors every part of dmlscope raises, with a message that says what to fix, and no transport in them.

The server maps each class to one HTTP status (server/errors.py, the only place statuses are chosen) and the
CLI maps them to exit codes (server/cli.py); neither re-states the other's rules, and raising one needs no web
framework. Subclass these for the errors of one area (`models.data.DatasetError` is an `InvalidInput`).
"""
from __future__ import annotations


class DmlscopeError(Exception):
    """Base of every expected, user-facing failure (a bug is any other exception)."""


class InvalidInput(DmlscopeError, ValueError):
    """The request, file or setting is malformed or impossible; resending it unchanged fails again."""


class NotFound(DmlscopeError):
    """The named dataset, run, sweep, ... does not exist."""


class Conflict(DmlscopeError):
    """The thing exists but its state forbids this now (running, in use, not ready); it may work later."""


class QueueFull(DmlscopeError):
    """Capacity is exhausted for now (too many queued jobs); retry after some finish."""
