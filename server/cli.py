"""`dmlscope train | eval | compare | sweep | serve | import`: the command line over the same store and data folder as the
server, so a run trained here shows up in the browser and the other way round.

Bad input (an unknown loss, a missing folder, a malformed flag) ends with one `dmlscope: error: ...` line and
exit code 2; a run that fails while training exits with 1 and the run is marked `failed` in the store.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, NoReturn, Sequence

from pydantic import ValidationError

from models.errors import DmlscopeError
from models.headline import HEADLINE, label
from server.settings import Settings

EXIT_BAD_INPUT = 2
EXIT_FAILED = 1
EXIT_INTERRUPTED = 130

# The headline numbers printed after a run and compared by `compare`: (summary key, label).
RUN_METRICS = (*HEADLINE, "radius_mean", "margin")  # a run's table (models/headline.py names them)

class BadInput(Exception):
    """A CLI usage error: printed as one line, exit code 2."""


class RunFailed(Exception):
    """A run that started but could not finish (e.g. its loss diverged): one line, exit code 1."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise BadInput(f"{message} (see `{self.prog} --help`)")


def _validation_message(exc: ValidationError) -> str:
    err = exc.errors(include_url=False)[0]
    where = ".".join(str(p) for p in err.get("loc", ()))
    msg = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
    return f"config {where}: {msg}" if where else f"config {msg}"  # model-level messages start with the field


# ---- store helpers ----------------------------------------------------------------------------------------
def _settings(args: argparse.Namespace) -> Settings:
    return Settings(data_dir=Path(args.data_dir)) if getattr(args, "data_dir", None) else Settings()


def resolve_dataset(store: Any, data: str) -> Any:
    """A built-in name, a class-per-folder directory, a .zip, or the id of a dataset already in the store."""
    from models.data import BUILTIN_DATASETS

    from server.cli_import import import_with_bar
    from server.imports import ensure_builtin, import_path

    if data in BUILTIN_DATASETS:
        return import_with_bar(f"import {data}", lambda bar: ensure_builtin(store, data, bar))
    path = Path(data)
    if path.exists():
        return import_with_bar(f"import {path.name}", lambda bar: import_path(store, path, on_progress=bar))
    try:
        return store.get_dataset(data)
    except DmlscopeError:
        raise BadInput(f"--data {data!r} is not a built-in set ({', '.join(sorted(BUILTIN_DATASETS))}), "
                       f"an existing folder or .zip, nor a dataset id in {store.root}") from None


# ---- printing ---------------------------------------------------------------------------------------------
def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) else "—"


def metrics_table(columns: dict[str, dict[str, Any]]) -> str:
    """Markdown table, one row per headline metric, one column per (run, split) given."""
    lines = ["| metric | " + " | ".join(columns) + " |", "|---|" + "---:|" * len(columns)]
    for key in RUN_METRICS:
        lines.append(f"| {label(key)} | " + " | ".join(_fmt(col.get(key)) for col in columns.values()) + " |")
    return "\n".join(lines)


# ---- commands ---------------------------------------------------------------------------------------------
def cmd_compare(args: argparse.Namespace) -> int:
    """Two finished runs side by side with models/compare.py (the numbers of GET /api/compare): metrics and
    headline geometry per split with B − A, then per-class compactness on the unseen classes."""
    from models.compare import compare_runs
    from models.runfolder import load_run
    from server.store import Store

    store = Store.open(_settings(args))
    recs = [store.get_run(r) for r in (args.run_a, args.run_b)]
    for rec in recs:
        if rec.status != "done" or rec.summary is None:
            raise BadInput(f"run {rec.id} is {rec.status}; compare needs two finished runs")
    a, b = recs
    cmp = compare_runs(load_run(store.run_dir(a.id)), load_run(store.run_dir(b.id)), None, limit=0)
    print(f"A = {a.id}  {a.name}\nB = {b.id}  {b.name}\n")
    print("| metric | " + " | ".join(f"{x} {s}" for s in ("train", "test") for x in ("A", "B", "B − A")) + " |")
    print("|---|" + "---:|" * 6)
    for part in (cmp.metrics, cmp.geometry):
        for key in dict.fromkeys(k for split in part.values() for k in split):
            cells = [_fmt(getattr(part[s].get(key), f, None)) for s in ("train", "test") for f in ("a", "b", "diff")]
            print(f"| {label(key)} | " + " | ".join(cells) + " |")
    print("\nper unseen class: radius = mean distance to the class centre; relative density = nearest other "
          "centre / radius; margin = smallest distance to another class − largest within (< 0: overlap)")
    cols = ["radius_mean", "relative_density", "margin"]
    print("| class | " + " | ".join(f"A {c} | B {c}" for c in cols) + " |")
    print("|---|" + "---:|" * (2 * len(cols)))
    for row in cmp.classes:
        print(f"| {row.name} | " + " | ".join(f"{_fmt(row.a[c])} | {_fmt(row.b[c])}" for c in cols) + " |")
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    """The reality-check sweep (models/sweep.py): splits × seeds, selection on validation classes, paired
    comparison with the baseline; prints the report as Markdown (also after Ctrl-C, marked partial)."""
    from models.data import check_trainable
    from models.sweep import DEFAULT_VARIANTS, Sweep, prepare_spec
    from server.cli_config import build_config
    from server import lifecycle
    from server.cli_train import run_in_store
    from server.store import Store

    names = tuple(v.strip() for v in args.variants.split(",")) if args.variants else DEFAULT_VARIANTS
    settings = _settings(args)
    base = build_config(args, settings)
    store = Store.open(settings)
    dataset = resolve_dataset(store, args.data)
    image_set = store.image_set(dataset.id)
    sweep = Sweep(prepare_spec(image_set, base, variants=names, splits=args.splits, seeds=args.seeds,
                               select=not args.no_select, min_steps=args.min_steps))
    first = sweep.next_runs()  # refuse a sweep this set cannot train before recording any run
    for run in first:
        check_trainable(image_set, run.config)
    sweep.requeue()

    def execute(run: Any) -> dict[str, Any]:
        label = f"[{sweep.finished + 1}/{sweep.total}] {run.name}"
        return run_in_store(store, lifecycle.record(store, dataset.id, run.config, run.name, status="running"),
                            label=label)[1]

    try:
        report = sweep.run(execute)
    except BaseException:
        _write_report(sweep.report(), args.json, partial=True)
        raise
    _write_report(report, args.json)
    return 0


def _write_report(report: Any, path: str | None, partial: bool = False) -> None:
    print(report.markdown())
    if path:
        Path(path).write_text(json.dumps(report.to_json(), indent=1, allow_nan=False), encoding="utf-8")
        print(f"{'partial ' if partial else ''}report written to {path}", file=sys.stderr)


def cmd_serve(args: argparse.Namespace) -> int:
    from server.app import serve

    overrides = {k: v for k, v in (("host", args.host), ("port", args.port), ("data_dir", args.data_dir),
                                   ("allowed_hosts", args.allowed_hosts)) if v is not None}
    serve(Settings(**overrides))
    return 0


# ---- parser -----------------------------------------------------------------------------------------------
def _add_data_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", help="data folder shared with the server (default: $DMLSCOPE_DATA_DIR or ./data)")


def build_parser() -> argparse.ArgumentParser:
    from server.cli_config import add_config_flags

    parser = _Parser(prog="dmlscope", description="Deep-metric-learning workbench: train, evaluate, compare, serve.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    from server.cli_train import add_run_parsers

    add_run_parsers(sub)

    p = sub.add_parser("compare", help="two runs side by side: metrics and per-class compactness")
    p.add_argument("run_a", metavar="RUN_A")
    p.add_argument("run_b", metavar="RUN_B")
    _add_data_dir(p)
    p.set_defaults(func=cmd_compare)

    from models.budget import MIN_STEPS
    from models.sweep_variants import DEFAULT_VARIANTS, VARIANTS

    p = sub.add_parser("sweep", help="reality-check comparison of the regularizers (Markdown table)",
                       description="Runs the baseline and each variant (default: " + ", ".join(DEFAULT_VARIANTS)
                                   + "; optional: " + ", ".join(v for v in VARIANTS if v not in DEFAULT_VARIANTS)
                                   + ") over --splits random class splits × --seeds seeds, all with one step "
                                   "budget, each variant's hyper-parameters chosen on a validation split of the "
                                   "training classes, and prints mean, 95 % CI and paired p-value against the "
                                   "baseline per variant.")
    p.add_argument("--data", default="mnist5k", help="as for train (default mnist5k)")
    p.add_argument("--splits", type=int, default=2, help="seeded random class splits (default 2)")
    p.add_argument("--seeds", type=int, default=3, help="seeds per split and variant (default 3)")
    p.add_argument("--variants", help="comma-separated, baseline included, e.g. baseline,flow,det")
    p.add_argument("--no-select", action="store_true",
                   help="skip the selection runs: every variant runs with its own patch")
    p.add_argument("--min-steps", type=int, default=MIN_STEPS,
                   help=f"fewer optimizer steps than this flags a run as under-trained (default {MIN_STEPS})")
    p.add_argument("--json", metavar="FILE", help="also write the report as JSON")
    add_config_flags(p)
    _add_data_dir(p)
    p.set_defaults(func=cmd_sweep)

    env_help = "\n".join(f"  {var:28s} {desc} (default: {default or 'unset'})"
                         for var, default, desc in Settings.field_help())
    p = sub.add_parser("serve", help="serve the web app and HTTP API", formatter_class=argparse.RawTextHelpFormatter,
                       description="Serve the app. Every setting can also be given in the environment:\n" + env_help)
    p.add_argument("--host", help="address to bind (default $DMLSCOPE_HOST or 127.0.0.1)")
    p.add_argument("--port", type=int, help="TCP port (default $DMLSCOPE_PORT or 8000)")
    p.add_argument("--allowed-hosts", help="comma-separated host names this server is reached by, besides loopback "
                                           "(default $DMLSCOPE_ALLOWED_HOSTS)")
    _add_data_dir(p)
    p.set_defaults(func=cmd_serve)

    from server.cli_import import add_import_parser

    add_import_parser(sub, _add_data_dir)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Console-script entry point; returns the exit code."""
    from models.progress import Cancelled
    from server.cli_import import ImportStopped

    try:
        args = build_parser().parse_args(argv)
        return args.func(args)
    except BadInput as exc:
        return _fail(str(exc), EXIT_BAD_INPUT)
    except ValidationError as exc:
        return _fail(_validation_message(exc), EXIT_BAD_INPUT)
    except (DmlscopeError, ValueError, FileNotFoundError) as exc:
        return _fail(str(exc), EXIT_BAD_INPUT)
    except ImportStopped as exc:
        return _fail(str(exc), EXIT_INTERRUPTED)
    except (Cancelled, KeyboardInterrupt):
        return _fail("stopped; the run keeps its last finished epoch", EXIT_INTERRUPTED)
    except RunFailed as exc:
        return _fail(str(exc), EXIT_FAILED)


def _fail(message: str, code: int) -> int:
    print(f"dmlscope: error: {message.splitlines()[0] if message else 'failed'}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
