"""The run-config flags of `dmlscope train` and `dmlscope sweep`, and the RunConfig they build.

A flag is one row of FLAGS (flag, config field); its type, choices and help come from the field itself
(models/config.py), so the CLI's `--help`, the OpenAPI schema and the browser's form say the same thing. The
config is defaults ← `--preset` (models/presets.py) ← `--config` file ← flags, deep-merged by
`RunConfig.with_patch` and checked against the registries (`models.compat.checked`) before anything runs.
"""
from __future__ import annotations

import argparse
import json
import types
import typing
from pathlib import Path
from typing import Any, Literal

from pydantic.fields import FieldInfo

from models.config import RunConfig
from models.presets import DESCRIPTIONS, PRESETS, preset_patch
from server.cli import BadInput
from server.settings import Settings

# (flag, RunConfig field, what the CLI adds to the field's description)
FLAGS: list[tuple[str, str, str]] = [
    ("--loss", "loss.name", ""), ("--distance", "distance.name", ""), ("--normalize", "distance.normalize", ""),
    ("--miner", "miner.name", ""), ("--flow", "flow.enabled", ""), ("--flow-depth", "flow.depth", ""),
    ("--flow-dueling", "flow.dueling", " (with --reg det=W)"), ("--coupling", "flow.coupling", ""),
    ("--epochs", "epochs", ""), ("--steps-per-epoch", "steps_per_epoch", ""), ("--seed", "seed", ""),
    ("--backbone", "backbone", ""), ("--pretrained", "pretrained", ""),
    ("--pretrained-weights", "pretrained_weights", ""), ("--freeze-bn", "freeze_bn", ""),
    ("--embedding-dim", "embedding_dim", ""), ("--image-size", "image_size", ""), ("--lr", "optimizer.lr", ""),
    ("--device", "device", "; default: $DMLSCOPE_DEVICE or auto"),
]


def config_field(path: str) -> FieldInfo:
    """The FieldInfo of a dotted RunConfig path such as "flow.dueling"."""
    model: Any = RunConfig
    *parents, leaf = path.split(".")
    for name in parents:
        model = model.model_fields[name].annotation
    return model.model_fields[leaf]


def _argument(info: FieldInfo) -> dict[str, Any]:
    """argparse keywords for a field: a switch for a bool, choices for a Literal, int/float for numbers."""
    kind = info.annotation
    if isinstance(kind, types.UnionType) or typing.get_origin(kind) is typing.Union:  # X | None
        kind = next(a for a in typing.get_args(kind) if a is not type(None))
    if kind is bool:
        return {"action": "store_true", "default": None}
    if typing.get_origin(kind) is Literal:
        return {"choices": list(typing.get_args(kind))}
    return {"type": kind} if kind in (int, float) else {}


def add_config_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("run config (flags left out keep the --config file's value or the default)")
    g.add_argument("--config", help="a RunConfig JSON file to start from")
    g.add_argument("--preset", choices=sorted(PRESETS), help="a whole recipe to start from, under --config and the "
                   "flags; benchmark: " + DESCRIPTIONS["benchmark"])
    for flag, path, extra in FLAGS:
        info = config_field(path)
        g.add_argument(flag, help=(f"{info.description}{extra}").replace("%", "%%"), **_argument(info))
    g.add_argument("--reg", action="append", metavar="NAME=WEIGHT",
                   help="add a regularizer with its weight, repeatable: det=0.05 density=0.5 zero_mean=0.005 ...")
    g.add_argument("--set", action="append", metavar="FIELD=JSON",
                   help="any other config field, repeatable: --set loss.params.margin=0.1 --set optimizer.name=sgd")


def _dest(flag: str) -> str:
    return flag.removeprefix("--").replace("-", "_")


def _key_value(text: str, flag: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise BadInput(f"{flag} expects NAME=VALUE, got {text!r}")
    return key.strip(), value.strip()


def _json_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text  # a bare word such as `affine` is a string


def config_patch(args: argparse.Namespace) -> dict[str, Any]:
    """The RunConfig patch the training flags ask for (flags left out change nothing)."""
    patch: dict[str, Any] = {}

    def put(path: str, value: Any) -> None:
        if value is None:
            return
        *parents, leaf = path.split(".")
        node = patch
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value

    for flag, path, _ in FLAGS:
        put(path, getattr(args, _dest(flag)))
    for item in args.set or []:
        key, value = _key_value(item, "--set")
        put(key, _json_value(value))
    return patch


def build_config(args: argparse.Namespace, settings: Settings) -> RunConfig:
    """RunConfig = defaults ← --preset ← --config file ← flags; `--reg NAME=W` sets (or adds) one regularizer's
    weight."""
    from models.compat import checked

    base: dict[str, Any] = {}
    if args.config:
        path = Path(args.config)
        try:
            base = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise BadInput(f"--config {path}: cannot read a JSON RunConfig ({exc})") from None
    if "device" not in base and args.device is None:
        base["device"] = settings.device  # DMLSCOPE_DEVICE=cpu keeps the CLI off the GPU like the server
    config = RunConfig.model_validate(preset_patch(args.preset) if args.preset else {}).with_patch(base)
    patch = config_patch(args)
    if args.reg:  # one patch with everything: --flow-dueling is only valid together with --reg det=...
        regs = {r.name: r.model_dump() for r in config.regularizers}
        for item in args.reg:
            name, weight = _key_value(item, "--reg")
            try:
                regs.setdefault(name, {"name": name})["weight"] = float(weight)
            except ValueError:
                raise BadInput(f"--reg {item}: the weight must be a number, e.g. --reg {name}=0.1") from None
        patch["regularizers"] = list(regs.values())
    return checked(config.with_patch(patch))
