"""The query parameters of the points endpoint as validated dependencies — the map parameters (UMAP's
n_neighbors and min_dist, 2-D or 3-D) and the columns to send — so an out-of-range value or an unknown column
is a 422 that names its field before any map is computed."""
from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Query
from fastapi.exceptions import RequestValidationError

from models.projection import MIN_DIST, MIN_DIST_RANGE, N_NEIGHBORS, NEIGHBORS_RANGE, MapParams


def map_params(
        n_neighbors: int = Query(N_NEIGHBORS, ge=NEIGHBORS_RANGE[0], le=NEIGHBORS_RANGE[1],
                                 description="UMAP: neighbours per point (local ↔ global structure)"),
        min_dist: float = Query(MIN_DIST, ge=MIN_DIST_RANGE[0], le=MIN_DIST_RANGE[1],
                                description="UMAP: how tightly points may pack"),
        dim: int = Query(2, ge=2, le=3, description="2-D or 3-D map")) -> MapParams:
    return MapParams(n_neighbors=n_neighbors, min_dist=min_dist, dim=dim)


MapParamsDep = Annotated[MapParams, Depends(map_params)]


POINT_COLUMNS = ("image_id", "label", "split", "x", "y", "z", "logdet", "lipschitz", "lipschitz_network",
                 "correct_at_1")


def point_columns(columns: str | None = Query(
        None, max_length=200, description="comma-separated columns to send (default: all): "
                                          + ", ".join(POINT_COLUMNS))) -> tuple[str, ...]:
    """The requested columns in the API's order; an unknown name is a 422 that lists the valid ones."""
    if columns is None:
        return POINT_COLUMNS
    wanted = {c.strip() for c in columns.split(",") if c.strip()}
    unknown = sorted(wanted - set(POINT_COLUMNS))
    if unknown or not wanted:
        what = f"unknown column {', '.join(map(repr, unknown))}" if unknown else "no column named"
        raise RequestValidationError([{"loc": ("query", "columns"), "type": "value_error",
                                       "msg": f"{what}; choose from {', '.join(POINT_COLUMNS)}"}])
    return tuple(c for c in POINT_COLUMNS if c in wanted)


PointColumnsDep = Annotated[tuple[str, ...], Depends(point_columns)]
