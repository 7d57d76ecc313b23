"""Benchmarks of dmlscope against the peer it replaces, each peer measured in the same process.

One module per benchmark (see `run_all.BENCHMARKS`); each has `run(**sizes) -> list[Section]` whose defaults are
the sizes `make bench` runs within its ~15-minute budget on 2 cores, and a `FULL` dict of the larger sizes
behind `--full`. `python -m bench.run_all [--full] [--only NAME ...]` prints each table, writes
`bench/results/NAME.md` and, for a complete run, `docs/benchmarks.md`. Tests never time anything;
`tests/test_bench_smoke.py` runs every benchmark at a tiny size so none of them rots.
"""
