"""The map parameters of the points endpoint (UMAP's n_neighbors and min_dist, 2-D or 3-D) as one validated
query dependency, so an out-of-range value is a 422 that names its field before any map is computed."""
from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Query

from models.projection import MIN_DIST, MIN_DIST_RANGE, N_NEIGHBORS, NEIGHBORS_RANGE, MapParams


def map_params(
        n_neighbors: int = Query(N_NEIGHBORS, ge=NEIGHBORS_RANGE[0], le=NEIGHBORS_RANGE[1],
                                 description="UMAP: neighbours per point (local ↔ global structure)"),
        min_dist: float = Query(MIN_DIST, ge=MIN_DIST_RANGE[0], le=MIN_DIST_RANGE[1],
                                description="UMAP: how tightly points may pack"),
        dim: int = Query(2, ge=2, le=3, description="2-D or 3-D map")) -> MapParams:
    return MapParams(n_neighbors=n_neighbors, min_dist=min_dist, dim=dim)


MapParamsDep = Annotated[MapParams, Depends(map_params)]
