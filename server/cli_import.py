"""`dmlscope import …`: bring outside results into the store. `import embeddings FILE` measures a vectors file
(.npz / .npy, see models.embeddings_import) as a run of origin `embeddings`, in this process, checked exactly
as `POST /api/embeddings` checks it (server/routes/embeddings_import.py)."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Callable


def add_import_parser(sub: Any, add_data_dir: Callable[[argparse.ArgumentParser], None]) -> None:
    p = sub.add_parser("import", help="import outside results into the store (embeddings)",
                       description="Import results made elsewhere; they appear in the browser like any run.")
    kinds = p.add_subparsers(dest="kind", required=True, parser_class=type(p))
    e = kinds.add_parser("embeddings", help="vectors + labels (.npz/.npy) measured as a run, with no model",
                         description="FILE: an .npz with vectors (N, D), labels (N,) [, image_ids, split], or an "
                                     ".npy structured array with those fields (docs/api.md, POST /api/embeddings).")
    e.add_argument("file", metavar="FILE", type=Path)
    e.add_argument("--name", help="run name (default: the file's name)")
    e.add_argument("--dataset", help="id of the stored dataset whose images the rows' image_ids name")
    e.add_argument("--distance", default="euclidean", help="a distance that needs no training (default euclidean)")
    add_data_dir(e)
    e.set_defaults(func=cmd_import_embeddings)


def cmd_import_embeddings(args: argparse.Namespace) -> int:
    from models.embeddings_import import measure_embeddings_file
    from server.cli import BadInput, _print_run, _settings, run_in_store
    from server.routes.embeddings_import import dataset_for, place_input, prepare
    from server.store import Store

    if not args.file.is_file():
        raise BadInput(f"{args.file} is not a file; give an .npz or .npy file of vectors and labels")
    store = Store.open(_settings(args))
    name = (args.name or args.file.name)[:200]
    dataset_id = store.get_dataset(args.dataset).id if args.dataset else None
    prepared = prepare(store, args.file, dataset_id, args.distance)
    dataset_id, _ = dataset_for(store, prepared, name)

    def work(run_dir: Path, bar: Any, stop: Any) -> dict[str, Any]:
        place_input(store, prepared, run_dir)
        return measure_embeddings_file(store.image_set(dataset_id), run_dir, prepared.config, on_progress=bar,
                                       should_cancel=stop)

    rec, summary = run_in_store(store, store.get_dataset(dataset_id), prepared.config, name, work=work,
                                origin="embeddings")
    _print_run(rec, store.run_dir(rec.id), summary)
    return 0
