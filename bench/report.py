"""Result tables: one `Section` per benchmark, rendered as Markdown, plus number formatting and the machine line."""
from __future__ import annotations

import datetime
import os
import platform
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Section:
    """One benchmark's table. `notes` say what was measured against what, with which N, and any caveat."""

    title: str
    columns: list[str]
    rows: list[list[Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, *cells: Any) -> None:
        if len(cells) != len(self.columns):
            raise ValueError(f"row has {len(cells)} cells but '{self.title}' has {len(self.columns)} columns")
        self.rows.append([str(c) for c in cells])

    def markdown(self) -> str:
        lines = [f"## {self.title}", ""]
        lines += [f"| {' | '.join(self.columns)} |", f"|{'|'.join('---' for _ in self.columns)}|"]
        lines += [f"| {' | '.join(row)} |" for row in self.rows]
        if self.notes:
            lines += [""] + [f"- {note}" for note in self.notes]
        return "\n".join(lines) + "\n"


def duration(s: float) -> str:
    """Seconds in the unit a reader compares at a glance: µs, ms or s, three significant figures."""
    if s < 1e-3:
        return f"{s * 1e6:.3g} µs"
    if s < 1.0:
        return f"{s * 1e3:.3g} ms"
    return f"{s:.3g} s"


def ratio(ours: float, peer: float) -> str:
    """ours / peer, e.g. "0.42×" (below 1: ours takes less time, or moves fewer bytes)."""
    return f"{ours / peer:.2f}×" if peer > 0 else "n/a"


def count(n: int) -> str:
    """10_000 → "10k", 1_000_000 → "1M": the N in a table cell."""
    for unit, size in (("M", 1_000_000), ("k", 1_000)):
        if n >= size and n % (size // 10) == 0:
            return f"{n / size:g}{unit}"
    return str(n)


def nbytes(n: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n} B"


def machine() -> str:
    """One line naming what the numbers were measured on: CPU, cores, memory, libraries, date."""
    import faiss
    import pytorch_metric_learning
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    memory = ""
    if hasattr(os, "sysconf") and "SC_PHYS_PAGES" in os.sysconf_names:
        memory = f", {nbytes(os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES'))} RAM"
    return (f"{cpu}, {os.cpu_count()} cores{memory}; {platform.system()} {platform.release()}; "
            f"Python {platform.python_version()}, torch {torch.__version__} ({torch.get_num_threads()} threads), "
            f"faiss {faiss.__version__}, pytorch-metric-learning {pytorch_metric_learning.__version__}; "
            f"{datetime.date.today().isoformat()}")
