"""The optimizer over three parameter groups: backbone, head (embedding layer + flow), loss (proxies, distance).

Fine-tuning a pretrained backbone wants a small learning rate while freshly initialised parts want a larger
one: Proxy-Anchor (Kim et al. 2020, official code) trains the backbone and the embedding layer at 1e-4 with
AdamW (weight decay 1e-4) and the proxies at 100× that. Empty group rates fall back along
loss_lr → head_lr → lr, so a config that sets only `lr` trains every parameter at it, as before.
"""
from __future__ import annotations

import torch
from torch import nn

from models.config import OptimizerConfig
from models.network import EmbeddingNet

GROUPS = ("backbone", "head", "loss")


def parameter_groups(model: EmbeddingNet, *loss_modules: nn.Module) -> dict[str, list[nn.Parameter]]:
    """Trainable parameters by group, each parameter once: the backbone's; the rest of the model (embedding
    head, flow, dueling flow); those of `loss_modules` (criterion, distance; shared ones counted once)."""
    seen: set[int] = set()

    def take(params) -> list[nn.Parameter]:
        out = []
        for p in params:
            if p.requires_grad and id(p) not in seen:
                seen.add(id(p))
                out.append(p)
        return out

    backbone = take(model.backbone.parameters())
    head = take(model.parameters())
    loss = take(p for m in loss_modules for p in m.parameters())
    return {"backbone": backbone, "head": head, "loss": loss}


def group_settings(o: OptimizerConfig) -> dict[str, tuple[float, float]]:
    """(learning rate, weight decay) per group after the fallbacks."""
    head_lr = o.head_lr if o.head_lr is not None else o.lr
    loss_lr = o.loss_lr if o.loss_lr is not None else head_lr
    head_wd = o.head_weight_decay if o.head_weight_decay is not None else o.weight_decay
    return {"backbone": (o.lr, o.weight_decay), "head": (head_lr, head_wd), "loss": (loss_lr, head_wd)}


def build_optimizer(o: OptimizerConfig, groups: dict[str, list[nn.Parameter]]) -> torch.optim.Optimizer:
    """The configured optimizer over the non-empty `groups`, each with its own lr and weight decay (in GROUPS
    order, so a checkpoint's optimizer state lines up with a rebuilt optimizer)."""
    settings = group_settings(o)
    param_groups = [{"params": groups[g], "lr": settings[g][0], "weight_decay": settings[g][1], "name": g}
                    for g in GROUPS if groups[g]]
    if o.name == "sgd":
        return torch.optim.SGD(param_groups, lr=o.lr, momentum=o.momentum)
    cls = torch.optim.AdamW if o.name == "adamw" else torch.optim.Adam
    return cls(param_groups, lr=o.lr)


def regroup_state(state: dict, optimizer: torch.optim.Optimizer) -> dict:
    """A saved optimizer state made loadable into `optimizer`: a checkpoint from before the groups existed holds
    one group whose parameters are, in order, the groups' concatenation; it is cut at the group boundaries."""
    saved = state["param_groups"]
    if len(saved) == len(optimizer.param_groups) or len(saved) != 1:
        return state  # the same layout (or a real mismatch, which load_state_dict reports)
    ids, cut, groups = saved[0]["params"], 0, []
    for group in optimizer.param_groups:
        n = len(group["params"])
        groups.append({**saved[0], "lr": group["lr"], "weight_decay": group["weight_decay"],
                       "params": ids[cut:cut + n]})
        cut += n
    return {**state, "param_groups": groups}
