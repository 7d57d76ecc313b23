"""`make bench`: run every benchmark, print each table, write bench/results/NAME.md and docs/benchmarks.md.

Each table is written as soon as its benchmark finishes, so a failure late in the run keeps the earlier ones.
docs/benchmarks.md (included by the README) is rewritten only by a complete run, never by `--only`.
"""
from __future__ import annotations

import argparse
import importlib
import statistics
import sys
import time
from pathlib import Path

from bench.report import Section, duration, machine

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
DOC = ROOT / "docs" / "benchmarks.md"
# Run order: fast and independent first; projection pays `import umap` and numba compilation.
BENCHMARKS = ("loss_step", "evaluation", "retrieval", "training", "loader", "serving", "projection")


# Tables of benchmarks that take too long for `make bench` (bench/scale.py) follow this line in docs/benchmarks.md;
# a `make bench` run keeps them.
KEPT = "<!-- Run on their own (python -m bench.NAME); make bench keeps everything below this line. -->"


def kept_part(doc: str) -> str:
    """The hand-placed tables below KEPT in an existing docs/benchmarks.md ("" when none)."""
    return doc[doc.index(KEPT):] if KEPT in doc else ""


def document(sections: list[Section], full: bool, seconds: float, kept: str = "", repeat: int = 1) -> str:
    """docs/benchmarks.md: how it was made, on what, then every table, then `kept` (see KEPT)."""
    command = "python -m bench.run_all --full" if full else "make bench"
    if repeat > 1:
        command = f"python -m bench.run_all{' --full' if full else ''} --repeat {repeat}"
    head = [
        "# Benchmarks", "",
        f"Made by `{command}` in {duration(seconds)} on: {machine()}.", "",
        "Every table compares dmlscope with a peer measured in the same process on the same inputs: a ratio is "
        "dmlscope ÷ peer (for times, below 1× is faster; for throughput, above 1× is faster). Timings are medians "
        "after a warm-up unless a note says a size was timed once. The machine is shared, so expect ±10–20 %.",
        "",
    ]
    return "\n".join(head) + "\n" + "\n".join(s.markdown() for s in sections) + ("\n" + kept if kept else "")


def spread(runs: list[list[Section]]) -> Section:
    """Every ratio cell ("0.81×") of the same tables over R whole runs: its median and range, so a headline ratio
    is quoted with the spread of repeated runs, not from one run (a table's own median is within one process)."""
    section = Section(f"Spread of every ratio over {len(runs)} runs of the benchmarks",
                      ["table", "row", "column", "median", "range"])
    for t, first in enumerate(runs[0]):
        leading = [row[0] for row in first.rows]
        for r, row in enumerate(first.rows):
            label = row[0] if leading.count(row[0]) == 1 else f"{row[0]} · {row[1]}"  # e.g. "100k · IVF-flat"
            for c, cell in enumerate(row):
                if not cell.endswith("×"):
                    continue
                values = sorted(float(run[t].rows[r][c].rstrip("×")) for run in runs)
                section.add(first.title.split(":")[0], label, first.columns[c], f"{statistics.median(values):.2f}×",
                            f"{values[0]:.2f}–{values[-1]:.2f}×")
    section.notes.append("Each run is a separate `run` of every benchmark, one after another in the same process "
                         "on the same machine; the tables above are the last run's.")
    return section


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run_all", description=__doc__)
    parser.add_argument("--full", action="store_true", help="the larger sizes (1M points): far past 15 minutes")
    parser.add_argument("--repeat", type=int, default=1, metavar="R",
                        help="run everything R times and add the spread of every ratio (for headline figures)")
    parser.add_argument("--only", nargs="+", choices=BENCHMARKS, metavar="NAME",
                        help=f"run only these ({', '.join(BENCHMARKS)}); docs/benchmarks.md is left alone")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error(f"--repeat must be at least 1, got {args.repeat}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    runs: list[list[Section]] = []
    for _ in range(args.repeat):
        sections: list[Section] = []
        for name in args.only or BENCHMARKS:
            module = importlib.import_module(f"bench.{name}")
            print(f"== {name} ...", flush=True)
            t = time.perf_counter()
            result = module.run(**(module.FULL if args.full else {}))
            text = "\n".join(s.markdown() for s in result)
            print(text, f"({name}: {duration(time.perf_counter() - t)})\n", sep="\n", flush=True)
            (RESULTS / f"{name}.md").write_text(text, encoding="utf-8")
            sections += result
        runs.append(sections)
    if args.repeat > 1:
        sections = sections + [spread(runs)]
        print(sections[-1].markdown(), flush=True)
    elapsed = time.perf_counter() - start
    if not args.only:
        kept = kept_part(DOC.read_text(encoding="utf-8")) if DOC.exists() else ""
        DOC.write_text(document(sections, args.full, elapsed, kept, args.repeat), encoding="utf-8")
        print(f"wrote {DOC.relative_to(ROOT)} ({duration(elapsed)} in all)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
