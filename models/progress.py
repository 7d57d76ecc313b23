"""One progress event type for long work, read by the CLI's progress bar and the server's event stream."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Callable


class Cancelled(Exception):
    """Raised between steps when the caller asked to stop; the last checkpoint stays valid."""


@dataclass
class Progress:
    stage: str  # "train" | "embed" | "evaluate" | "stats" | "project" | "done"
    fraction: float = 0.0  # of the whole run, 0..1
    epoch: int = 0
    epochs: int = 0
    step: int = 0
    steps: int = 0
    loss: float | None = None
    terms: dict[str, float] = field(default_factory=dict)  # the loss and each weighted regulariser
    diagnostics: dict[str, float] = field(default_factory=dict)
    samples_per_s: float | None = None
    eta_s: float | None = None
    message: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


ProgressCallback = Callable[[Progress], None]
CancelCheck = Callable[[], bool]


def never_cancel() -> bool:
    return False


def ignore_progress(_: Progress) -> None:
    return None
