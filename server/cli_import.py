"""`dmlscope import cub|cars|sop|inshop PATH`: a local copy of a DML benchmark, in its published layout, into
the data folder with its standard split, so `split.mode = "predefined"` trains on it from every surface.

The server has no route for this on purpose: a folder on the server would be a path taken from a request.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

# CLI name → what the user should have unpacked there (models.data.benchmarks reads the layout itself)
LAYOUTS = {"cub": "CUB_200_2011/ (images.txt, image_class_labels.txt, classes.txt, images/)",
           "cars": "cars_annos.mat + car_ims/, or the devkit layout (devkit/, cars_train/, cars_test/)",
           "sop": "Stanford_Online_Products/ (Ebay_train.txt, Ebay_test.txt, <category>_final/)",
           "inshop": "list_eval_partition.txt (or Eval/list_eval_partition.txt) and img/"}


def add_import_parser(sub: Any, add_data_dir: Any) -> None:
    """Register `import` on the CLI's sub-parsers (`add_data_dir` adds the shared --data-dir flag)."""
    layouts = "\n".join(f"  {kind:7s} {layout}" for kind, layout in LAYOUTS.items())
    p = sub.add_parser("import", help="import a local copy of CUB, Cars, SOP or In-Shop with its standard split",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Import a benchmark from the folder its archive was unpacked into (as published):\n"
                                   + layouts + "\nIts train/test split is kept: train with --set "
                                   "split.mode=predefined (or choose 'predefined' in the browser).")
    p.add_argument("kind", choices=list(LAYOUTS), metavar="{" + ",".join(LAYOUTS) + "}")
    p.add_argument("path", metavar="PATH", help="the benchmark's folder")
    p.add_argument("--name", help="dataset name shown in the browser (default: the kind and folder name)")
    add_data_dir(p)
    p.set_defaults(func=cmd_import)


def cmd_import(args: argparse.Namespace) -> int:
    from server.cli import BadInput, _settings
    from server.store import Store

    path = Path(args.path).expanduser()
    if not path.is_dir():
        raise BadInput(f"{path} is not a folder; give the folder the {args.kind} archive was unpacked into "
                       f"({LAYOUTS[args.kind]})")
    store = Store.open(_settings(args))
    rec = store.import_benchmark(args.kind, path, args.name)
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
