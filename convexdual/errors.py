"""Exceptions raised by convexdual.

Misuse (bad shapes, NaN, beta <= 0, ...) raises the builtin ``ValueError`` /
``TypeError`` with a message that says what was wrong and what is allowed.
The classes here cover what is not the caller's argument's fault.
"""

from __future__ import annotations

__all__ = [
    "ConvexDualError",
    "SolverUnavailableError",
    "SolverFailedError",
    "DataFormatError",
    "CheckpointError",
]


class ConvexDualError(Exception):
    """Base class of every convexdual-specific error."""


class SolverUnavailableError(ConvexDualError):
    """A solver backend is not installed, not licensed, or unknown.

    The message names the backend, the reason, and the fix (the extra to
    install, the licence to provide, or the solvers that are available).
    """


class SolverFailedError(ConvexDualError):
    """A solve ended without an optimal status (see ``SolveResult.raise_for_status``)."""

    def __init__(self, message: str, status: object | None = None) -> None:
        super().__init__(message)
        self.status = status


class DataFormatError(ConvexDualError, ValueError):
    """A data file is missing, unreadable, or not in the expected format."""


class CheckpointError(ConvexDualError, ValueError):
    """A checkpoint cannot be used: missing, empty, truncated, corrupt, not a checkpoint,
    another format version, or written by another solver or for another problem.

    The message names the file, says what is wrong and what to do; ``path`` is the file.
    (A ``ValueError`` too, as the checks it replaces raised ValueError.)
    """

    def __init__(self, message: str, path: object | None = None) -> None:
        super().__init__(message)
        self.path = path
