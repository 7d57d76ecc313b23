"""The one list of a run's headline metrics: key, label, description, and which way is better.

Everything that names a metric reads it from here: the run summary (models/geometry.py), the CLI tables, the
leaderboard's groups, the sweep report, and the browser (served by GET /api/metrics), so a label is written once.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal


@dataclass(frozen=True)
class HeadlineMetric:
    key: str
    label: str
    description: str
    kind: Literal["retrieval", "geometry"]
    higher_is_better: bool | None  # None: neither (a scale, whose meaning depends on the distance)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


_OWN = "in the run's own distance"
RETRIEVAL: tuple[HeadlineMetric, ...] = (
    HeadlineMetric("recall_at_1", "Recall@1", "share of queries whose nearest neighbour has their class", "retrieval",
                   True),
    HeadlineMetric("recall_at_2", "Recall@2", "share of queries with a same-class image among their 2 nearest",
                   "retrieval", True),
    HeadlineMetric("recall_at_4", "Recall@4", "share of queries with a same-class image among their 4 nearest",
                   "retrieval", True),
    HeadlineMetric("recall_at_8", "Recall@8", "share of queries with a same-class image among their 8 nearest",
                   "retrieval", True),
    HeadlineMetric("precision_at_1", "Precision@1", "share of nearest neighbours of the query's class (= Recall@1)",
                   "retrieval", True),
    HeadlineMetric("map_at_r", "MAP@R", "mean average precision over each query's R same-class images (the "
                   "headline)", "retrieval", True),
    HeadlineMetric("r_precision", "R-Precision", "share of same-class images among each query's R nearest",
                   "retrieval", True),
    HeadlineMetric("nmi", "NMI", "normalised mutual information of a k-means clustering with the classes",
                   "retrieval", True),
)
GEOMETRY: tuple[HeadlineMetric, ...] = (
    HeadlineMetric("radius_mean", "mean radius", f"mean distance of a class's images to its centre, {_OWN}",
                   "geometry", None),
    HeadlineMetric("relative_density", "relative density", "nearest other class centre ÷ the class radius, "
                   "averaged over classes", "geometry", True),
    HeadlineMetric("delta1", "δ1: largest intra-class distance", f"largest distance within a class, {_OWN}",
                   "geometry", None),
    HeadlineMetric("delta2", "δ2: smallest inter-class distance", f"smallest distance between classes, {_OWN}",
                   "geometry", None),
    HeadlineMetric("margin", "margin δ2 − δ1", "smallest distance to another class − largest within (< 0: classes "
                   "overlap)", "geometry", True),
    HeadlineMetric("pi_intra", "π_intra: mean intra-class distance", f"mean distance within a class, {_OWN}",
                   "geometry", None),
    HeadlineMetric("pi_inter", "π_inter: mean distance between class centres",
                   f"mean distance between class centres, {_OWN}", "geometry", None),
    HeadlineMetric("pi_ratio", "π_intra / π_inter (π_ratio)", "mean intra-class ÷ mean inter-centre distance (free "
                   "of the scale)", "geometry", False),
    HeadlineMetric("spectral_decay", "spectral decay ρ(Φ)", "how fast the embedding's singular values fall (a "
                   "collapse indicator)", "geometry", None),
)
METRICS: tuple[HeadlineMetric, ...] = RETRIEVAL + GEOMETRY
BY_KEY: dict[str, HeadlineMetric] = {m.key: m for m in METRICS}

# What a run summary keeps per split (models/geometry.py.headline): retrieval, then geometry.
HEADLINE = ("recall_at_1", "recall_at_2", "recall_at_4", "recall_at_8", "map_at_r", "r_precision", "nmi")
GEOMETRY_KEYS = ("radius_mean", "relative_density", "margin", "pi_inter", "pi_ratio", "spectral_decay")


def label(key: str) -> str:
    """The display label of a metric key (the key itself for one that is not in the list)."""
    return BY_KEY[key].label if key in BY_KEY else key
