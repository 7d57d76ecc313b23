"""`dmlscope import …`: bring outside data and results into the store.

`import cub|cars|sop|inshop PATH` copies a local copy of a DML benchmark, in its published layout, into the data
folder with its standard split, so `split.mode = "predefined"` trains on it from every surface. The server has no
route for this on purpose: a folder on the server would be a path taken from a request.

`import embeddings FILE` measures a vectors file (.npz / .npy, see models.embeddings_import) as a run of origin
`embeddings`, in this process, checked exactly as `POST /api/embeddings` checks it
(server/routes/embeddings_import.py).
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Callable, TypeVar

T = TypeVar("T")

# CLI name → what the user should have unpacked there (models.data.benchmarks reads the layout itself)
LAYOUTS = {"cub": "CUB_200_2011/ (images.txt, image_class_labels.txt, classes.txt, images/)",
           "cars": "cars_annos.mat + car_ims/, or the devkit layout (devkit/, cars_train/, cars_test/)",
           "sop": "Stanford_Online_Products/ (Ebay_train.txt, Ebay_test.txt, <category>_final/)",
           "inshop": "list_eval_partition.txt (or Eval/list_eval_partition.txt) and img/"}


def add_import_parser(sub: Any, add_data_dir: Callable[[argparse.ArgumentParser], None]) -> None:
    """Register `import` and its sub-commands on the CLI's sub-parsers (`add_data_dir` adds the shared
    --data-dir flag)."""
    p = sub.add_parser("import", help="import a benchmark (CUB, Cars, SOP, In-Shop) with its standard split, or "
                                      "embeddings made elsewhere",
                       description="Import data or results made elsewhere; they appear in the browser like any other.")
    kinds = p.add_subparsers(dest="kind", required=True, parser_class=type(p))
    for kind, layout in LAYOUTS.items():
        b = kinds.add_parser(kind, help=f"a local copy of {kind}: {layout}",
                             description=f"Import {kind} from the folder its archive was unpacked into (as "
                                         f"published): {layout}. Its train/test split is kept: train with --set "
                                         "split.mode=predefined (or choose 'predefined' in the browser).")
        b.add_argument("path", metavar="PATH", help="the benchmark's folder")
        b.add_argument("--name", help="dataset name shown in the browser (default: the kind and folder name)")
        add_data_dir(b)
        b.set_defaults(func=cmd_import_benchmark)

    e = kinds.add_parser("embeddings", help="vectors + labels (.npz/.npy) measured as a run, with no model",
                         description="FILE: an .npz with vectors (N, D), labels (N,) [, image_ids, split], or an "
                                     ".npy structured array with those fields (docs/api.md, POST /api/embeddings).")
    e.add_argument("file", metavar="FILE", type=Path)
    e.add_argument("--name", help="run name (default: the file's name)")
    e.add_argument("--dataset", help="id of the stored dataset whose images the rows' image_ids name")
    e.add_argument("--distance", default="euclidean", help="a distance that needs no training (default euclidean)")
    add_data_dir(e)
    e.set_defaults(func=cmd_import_embeddings)


class ImportStopped(Exception):
    """Ctrl-C during an import: it was discarded (no record, no folder)."""


def import_with_bar(label: str, run: Callable[[Any], T]) -> T:
    """`run(on_progress)` an import (server.imports) with a progress bar, drawn from its first file on (an
    import refused before it shows only the error); Ctrl-C cancels it, leaving nothing behind (the import
    discards itself), and ends the command with ImportStopped."""
    from models.progress import Cancelled, Progress
    from server.cli_train import ProgressBar

    bar: ProgressBar | None = None

    def on_progress(progress: Progress) -> None:
        nonlocal bar
        bar = bar or ProgressBar(label)
        bar(progress)

    try:
        return run(on_progress)
    except (Cancelled, KeyboardInterrupt):
        raise ImportStopped(f"{label}: cancelled; nothing of it was stored") from None
    finally:
        if bar is not None:
            bar.close()


def cmd_import_benchmark(args: argparse.Namespace) -> int:
    from server.cli import BadInput, _settings
    from server.imports import import_benchmark
    from server.store import Store

    path = Path(args.path).expanduser()
    if not path.is_dir():
        raise BadInput(f"{path} is not a folder; give the folder the {args.kind} archive was unpacked into "
                       f"({LAYOUTS[args.kind]})")
    store = Store.open(_settings(args))
    rec = import_with_bar(f"import {args.kind}", lambda bar: import_benchmark(store, args.kind, path, args.name, bar))
    info, split = rec.info, rec.info["predefined_split"]
    print(f"dataset {rec.id} {rec.name!r}: {info['num_images']} images, {info['num_classes']} classes; predefined "
          f"split: train {split['train_images']} images / {split['train_classes']} classes, test "
          f"{split['test_images']} images / {split['test_classes']} classes")
    if info["skipped"]:
        print(f"skipped {len(info['skipped'])} file(s), e.g. {info['skipped'][0]['path']}: "
              f"{info['skipped'][0]['reason']}")
    for warning in info["warnings"]:
        print(f"warning: {warning}")
    print(f"train on it: dmlscope train --data {rec.id} --set split.mode=predefined")
    return 0


def cmd_import_embeddings(args: argparse.Namespace) -> int:
    from server.cli import BadInput, _settings
    from server.cli_train import print_run, run_in_store
    from server.routes.embeddings_import import prepare, record
    from server.store import Store

    if not args.file.is_file():
        raise BadInput(f"{args.file} is not a file; give an .npz or .npy file of vectors and labels")
    store = Store.open(_settings(args))
    name = (args.name or args.file.name)[:200]
    dataset_id = store.get_dataset(args.dataset).id if args.dataset else None
    prepared = prepare(store, args.file, dataset_id, args.distance)
    rec, summary = run_in_store(store, record(store, prepared, name, status="running"))
    print_run(rec, store.run_dir(rec.id), summary)
    return 0
