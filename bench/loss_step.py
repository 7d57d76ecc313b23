"""Loss step: forward + backward of every loss × distance, and of each regularizer on the default loss.

Peer: the same PML loss class with the same hyper-parameters and PML's own Euclidean distance
(`LpDistance(normalize_embeddings=False)`), called bare. A ratio is the price of a choice: our distance
implementation, the diagnostics counter, an asymmetric or learnable distance, a regularizer, a flow layer.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from pytorch_metric_learning import miners as pml_miners
from pytorch_metric_learning.distances import LpDistance
from torch import Tensor, nn

from bench.report import Section, duration, ratio
from bench.timing import compare

FULL: dict[str, Any] = {}  # the batch is the same at any scale
FLOW_DEPTH, FLOW_HIDDEN = 4, 128  # FlowConfig's defaults
# The default loss's regularizer rows: (label, regularizer name or None, its params, flow layers needed).
REGULARIZER_ROWS = (
    ("no regularizer", None, {}, 0),
    ("zero_mean", "zero_mean", {}, 0),
    ("l2_embedding", "l2_embedding", {}, 0),
    ("l2_weights", "l2_weights", {}, 0),
    ("density", "density", {}, 0),
    ("det (+ flow layer)", "det", {}, 1),
    ("det ε = 0.5 (+ flow layer)", "det", {"epsilon": 0.5}, 1),
    ("det dueling (+ two flow layers)", "det", {}, 2),
)


BUDGET_S = 3.0  # per row and phase: a round of seconds (lifted structure at B = 256) is timed once


def _step(loss: Callable[[], Tensor], params: list[Tensor]) -> Callable[[], None]:
    def once() -> None:
        for p in params:
            p.grad = None
        loss().backward()

    return once


def _row_times(peer: Callable[[], None], *ours: Callable[[], None], repeat: int) -> tuple[float, list[float]]:
    """(peer, [ours...]) median seconds, all steps of the row taken in turns so load on the machine hits them alike."""
    times = [t for _, t in compare(peer, *ours, repeat=repeat, warmup=3, budget_s=BUDGET_S)]
    return times[0], times[1:]


def _batch(batch: int, dim: int, classes: int) -> tuple[Tensor, Tensor]:
    generator = torch.Generator().manual_seed(0)
    x = (0.5 * torch.randn(batch, dim, generator=generator)).requires_grad_()
    return x, torch.arange(batch) % classes  # a P × K batch: `classes` classes × batch/classes samples


def loss_by_distance(batch: int, dim: int, classes: int, repeat: int) -> Section:
    from models.config import LossConfig, MinerConfig
    from models.distances import list_distances, create_distance
    from models.losses import LOSSES, create_criterion, list_losses

    x, y = _batch(batch, dim, classes)
    distances = list_distances()
    section = Section(f"Loss step (forward + backward, {batch}×{dim} batch) vs the plain PML loss",
                      ["loss", "PML, Euclidean", *distances])
    matrices = [_step(lambda d=create_distance(name, dim=dim): d(x).sum(), [x]) for name in distances]
    t_peer, t_ours = _row_times(_step(lambda: LpDistance(normalize_embeddings=False)(x).sum(), [x]), *matrices,
                                repeat=repeat)
    section.add("(distance matrix only)", duration(t_peer), *(ratio(t, t_peer) for t in t_ours))
    for loss in list_losses():
        peer = LOSSES.create(loss, LpDistance(normalize_embeddings=False), classes, dim)
        steps = []
        for name in distances:
            ours = create_criterion(LossConfig(name=loss), MinerConfig(name="none"),
                                    create_distance(name, dim=dim), classes, dim)
            steps.append(_step(lambda c=ours: c(x, y).loss, [x, *ours.parameters()]))
        t_peer, t_ours = _row_times(_step(lambda: peer(x, y), [x, *peer.parameters()]), *steps, repeat=repeat)
        section.add(loss, duration(t_peer), *(ratio(t, t_peer) for t in t_ours))
    section.notes += [
        f"Cells: our criterion (no miner) with that distance ÷ PML's loss with Euclidean. The steps of a row are "
        f"taken in turns; median of up to {repeat} rounds after up to 3 warm-up rounds, each phase stopping after "
        f"{BUDGET_S:g} s (a row of seconds-long steps gets one round). {classes} classes × {batch // classes} samples; proxy losses "
        f"have {classes} proxies. One torch thread: on a shared machine two threads wait on each other whenever a "
        "neighbour runs, and a batch this small gains little from a second core.",
        "The first row is the B × B distance matrix alone (forward + backward of its sum) against PML's "
        "LpDistance: the Euclidean column of a loss row minus it is the criterion wrapper's own overhead "
        "(miner call, diagnostics counter); the other columns add the price of each distance (a learnable L for "
        "Mahalanobis, the query's energy for SNR).",
    ]
    return section


class _Head(nn.Module):
    """A linear embedding head with 0, 1 or 2 flow layers on top: what the regularizers read (weights, logdets)."""

    def __init__(self, dim: int, flows: int):
        super().__init__()
        from models.flow import FlowMetricLayer

        self.linear = nn.Linear(dim, dim)
        self.flows = nn.ModuleList(FlowMetricLayer(dim, FLOW_DEPTH, FLOW_HIDDEN, "affine") for _ in range(flows))

    def inputs(self, x: Tensor, y: Tensor, distance: nn.Module):
        from models.regularizers import RegularizerInputs

        h = self.linear(x)
        if not self.flows:
            return RegularizerInputs(embeddings=h, labels=y, model=self, distance=distance)
        z, logdet = self.flows[0](h)
        dueling = self.flows[1](h)[1] if len(self.flows) > 1 else None
        return RegularizerInputs(embeddings=z, labels=y, features=h, logdet=logdet, logdet_dueling=dueling,
                                 flow=self.flows[0], model=self, distance=distance)


def regularizers(batch: int, dim: int, classes: int, repeat: int) -> Section:
    from models.config import LossConfig, MinerConfig
    from models.distances import create_distance
    from models.losses import LOSSES, create_criterion
    from models.regularizers import create_regularizer

    x, y = _batch(batch, dim, classes)
    loss, miner = LossConfig(), MinerConfig()  # the defaults: triplet, semihard
    pml_distance = LpDistance(normalize_embeddings=False)
    peer_loss = LOSSES.create(loss.name, pml_distance, classes, dim, **loss.params)
    peer_miner = pml_miners.TripletMarginMiner(margin=0.2, type_of_triplets="semihard", distance=pml_distance)
    head = _Head(dim, flows=0)

    def peer_loss_step() -> Tensor:
        h = head.linear(x)
        return peer_loss(h, y, peer_miner(h, y))

    labels, steps = [], []
    for label, name, params, flows in REGULARIZER_ROWS:
        distance = create_distance("euclidean")
        criterion = create_criterion(loss, miner, distance, classes, dim)
        model = _Head(dim, flows)
        reg = create_regularizer(name, **params) if name else None

        def step(model=model, criterion=criterion, reg=reg, distance=distance) -> Tensor:
            inputs = model.inputs(x, y, distance)
            total = criterion(inputs.embeddings, y).loss
            return total + 0.1 * reg(inputs) if reg is not None else total

        labels.append(label)
        steps.append(_step(step, [x, *model.parameters()]))
    t_peer, t_ours = _row_times(_step(peer_loss_step, [x, *head.parameters()]), *steps, repeat=repeat)
    section = Section(f"Regularizers on the default loss ({loss.name} + {miner.name} miner, Euclidean, linear head)",
                      ["regularizer", "step", "vs PML loss + miner"])
    section.add("PML (peer)", duration(t_peer), "1.00×")
    for label, t in zip(labels, t_ours):
        section.add(label, duration(t), ratio(t, t_peer))
    section.notes.append(
        f"Each step: linear head {dim}→{dim} (+ flow layers of depth {FLOW_DEPTH}, width {FLOW_HIDDEN} where "
        f"named), loss with its miner, weight × regularizer, backward; all rows and the peer in turns, median of up "
        f"to {repeat} rounds. The peer is PML's TripletMarginLoss + semihard TripletMarginMiner on the same head.")
    return section


def run(batch: int = 256, dim: int = 128, classes: int = 32, repeat: int = 20) -> list[Section]:
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return [loss_by_distance(batch, dim, classes, repeat), regularizers(batch, dim, classes, repeat)]
    finally:
        torch.set_num_threads(threads)
