"""The explorer: the domain service behind the explore and analysis routers, one per app (`app.state.explorer`).

It reads finished runs through models.runfolder and keeps what it reads or computes from them: a done run never
changes (ids are not reused; only failed, cancelled or interrupted runs resume), so parsed artifacts, models,
k-NN indexes, encoded response bodies and analysis results are held in small LRUs owned by this object, and
lazily computed files (UMAP maps, correct@1 columns) are written into the run folder through RunFolder. Every
request still checks the run is done, so a deleted run is not served. Two apps never share these caches.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any, Callable, Literal

import numpy as np

from models.errors import Conflict, InvalidInput, NotFound
from models.projection import MapParams
from server.schemas import Neighbor, thumb_url
from server.store import RunRecord, Store

Split = Literal["train", "test"]
SPLITS: tuple[Split, Split] = ("train", "test")


class LRU:
    """A small thread-safe LRU of values built on demand (one build per key at a time).

    At most `size` values; with `max_bytes`, also at most that many bytes of `len(value)` (response bodies).
    """

    def __init__(self, size: int, max_bytes: int | None = None):
        self.size, self.max_bytes = size, max_bytes
        self._items: OrderedDict[Any, Any] = OrderedDict()
        self._lock = threading.Lock()
        self._building: dict[Any, threading.Lock] = {}

    def __len__(self) -> int:
        return len(self._items)

    def _over(self) -> bool:
        if len(self._items) > self.size:
            return True
        return self.max_bytes is not None and sum(len(v) for v in self._items.values()) > self.max_bytes

    def get(self, key: Any, build: Callable[[], Any]) -> Any:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
            gate = self._building.setdefault(key, threading.Lock())
        with gate:
            with self._lock:
                if key in self._items:
                    return self._items[key]
            value = build()
            with self._lock:
                self._items[key] = value
                while len(self._items) > 1 and self._over():
                    self._items.popitem(last=False)
                self._building.pop(key, None)
            return value

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


class RunView:
    """A finished run's artifacts with its dataset's labels and class names, per split (kept by the explorer)."""

    def __init__(self, explorer: "Explorer", rec: RunRecord):
        from models.runfolder import load_run

        self.explorer, self.rec = explorer, rec
        self.art = load_run(explorer.store.run_dir(rec.id))
        self.image_set = explorer.store.image_set(rec.dataset_id)
        self.class_names: list[str] = list(self.image_set.class_names)
        self._embeddings: dict[str, np.ndarray] = {}

    def image_ids(self, split: Split) -> np.ndarray:
        return self.art.split[split]

    def labels(self, split: Split) -> np.ndarray:
        return self.image_set.labels[self.art.split[split]]

    def embeddings(self, split: Split) -> np.ndarray:
        """An in-memory copy of the memory-mapped file (torch wants writable memory), made once and shared by
        every request: read it, never write to it."""
        if split not in self._embeddings:
            self._embeddings[split] = np.array(self.art.embeddings(split))
        return self._embeddings[split]

    def checkpoint(self, needed_for: str) -> Any:
        """The run's dmlscope checkpoint path. A run imported from a TorchScript module or as embeddings has
        none: Conflict saying what it is `needed_for` and what to do instead."""
        if not self.art.has_checkpoint():
            how = ("was imported as embeddings, with no model" if self.rec.origin == "embeddings" else
                   "was imported from a TorchScript module, which only its import worker runs")
            raise Conflict(f"run {self.rec.id!r} has no dmlscope checkpoint (it {how}), which {needed_for}")
        return self.art.checkpoint_path

    def loaded(self) -> Any:
        """The run's model (LoadedModel, on the CPU) for embedding uploaded images."""
        from models.inference import load_model

        self.checkpoint("a query by uploaded image needs: query it by image id instead")
        return self.explorer.models.get(self.rec.id, lambda: load_model(self.art.dir, device="cpu"))

    def index(self, split: Split) -> Any:
        """The split's RetrievalIndex under the run's own distance (no model loaded: works for every origin)."""
        from models.inference import load_distance
        from models.retrieval import RetrievalIndex

        return self.explorer.indexes.get((self.rec.id, split),
                                         lambda: RetrievalIndex(self.embeddings(split), load_distance(self.art.dir)))

    def correct_at_1(self, split: Split) -> np.ndarray:
        """1 where the sample's nearest other sample of its split (run's distance) has its class, else 0;
        computed once and cached in the run folder (later requests and restarts read it)."""
        with self.explorer.lock((self.art.dir, "correct_at_1", split)):
            cached = self.art.correct_at_1(split)
            if cached is not None:
                return np.asarray(cached)
            labels = self.labels(split)
            ids = self.index(split).neighbours(self.embeddings(split), 1, exclude_self_ids=np.arange(len(labels)))
            value = (np.zeros(len(labels), np.int32) if ids.shape[1] == 0 else
                     (labels[ids[:, 0]] == labels).astype(np.int32))
            self.art.write_correct_at_1(split, value)
            return value

    def projection(self, method: str, split: str, params: MapParams) -> np.ndarray:
        """(N, dim) map; computed on first use, aligned to the parent run's map (models.maps)."""
        from models.maps import ensure_projection

        parent = self.explorer.parent(self.rec)
        if parent is not None:  # the parent's map first: a child's map starts from it and is aligned to it
            self.explorer.view_of(parent).projection(method, split, params)
        with self.explorer.lock((self.art.dir, "projection", method, split, params)):
            return ensure_projection(self.art.dir, method, split,
                                     self.explorer.store.run_dir(parent.id) if parent is not None else None, params)

    def locate(self, image_id: int) -> tuple[Split, int]:
        """(split, row) of an image of this run; NotFound if neither split has it."""
        for split in SPLITS:
            where = np.flatnonzero(self.image_ids(split) == image_id)
            if len(where):
                return split, int(where[0])
        raise NotFound(f"image {image_id} is in neither split of this run; pick an image id from its points")

    def neighbour_list(self, ids: np.ndarray, values: np.ndarray, split: Split,
                       query_class: str | None) -> list[Neighbor]:
        image_ids, labels = self.image_ids(split), self.labels(split)
        out = []
        for rank, (j, value) in enumerate(zip(ids, values), start=1):
            cls = self.class_names[int(labels[j])]
            out.append(Neighbor(rank=rank, image_id=int(image_ids[j]), class_=cls, distance=float(value),
                                correct=None if query_class is None else cls == query_class,
                                thumb_url=thumb_url(self.rec.dataset_id, int(image_ids[j]))))
        return out


class Explorer:
    """Finished runs for exploring, with this app's caches (`clear()` empties them all)."""

    def __init__(self, store: Store):
        self.store = store
        self.views = LRU(16)  # run id → RunView (parsed JSON artifacts, embeddings)
        self.models = LRU(8)  # run id → LoadedModel (model and trained distance, on the CPU)
        self.indexes = LRU(8)  # (run id, split) → RetrievalIndex
        self.bodies = LRU(64, max_bytes=256 << 20)  # (run id, what, ...) → encoded response body
        self.results = LRU(16)  # (run id, what, split) → a models.analysis result
        self._locks = LRU(64)  # (run folder, cached file, ...) → Lock: one computation of a file at a time

    def clear(self) -> None:
        for cache in (self.views, self.models, self.indexes, self.bodies, self.results, self._locks):
            cache.clear()

    def lock(self, key: Any) -> threading.Lock:
        return self._locks.get(key, threading.Lock)

    def finished(self, run_id: str) -> RunRecord:
        rec = self.store.get_run(run_id)
        if rec.status != "done":
            raise Conflict(f"run {rec.id} is {rec.status}; its results exist once it is done")
        return rec

    def view_of(self, rec: RunRecord) -> RunView:
        """The kept view of a done run: its JSON is parsed and its arrays read once, not on every request."""
        return self.views.get(rec.id, lambda: RunView(self, rec))

    def view(self, run_id: str) -> RunView:
        return self.view_of(self.finished(run_id))

    def parent(self, rec: RunRecord) -> RunRecord | None:
        """The finished run `rec` retrains, if any (its maps are what `rec`'s maps align to)."""
        if rec.parent_id is None:
            return None
        try:
            parent = self.store.get_run(rec.parent_id)
        except NotFound:
            return None
        return parent if parent.status == "done" else None

    def map(self, view: RunView, method: str, split: str, params: MapParams, align_to: RunView | None = None
            ) -> tuple[np.ndarray, bool]:
        """(the run's map of `split`, whether it was aligned): with `align_to`, moved by the similarity transform
        (rotation or reflection, uniform scale, shift; models.projection.align) that best maps it onto that
        run's map of the same parameters on the images both show, so two runs' maps read in one orientation.
        Unaligned when they share fewer than 3 images."""
        from models.projection import align
        from models.runfolder import split_ids

        xy = view.projection(method, split, params)
        if align_to is None:
            return xy, False
        if align_to.rec.dataset_id != view.rec.dataset_id:
            raise Conflict(f"run {view.rec.id} and run {align_to.rec.id} use different datasets: their maps share "
                           f"no images to align on; leave align_to out")
        reference = align_to.projection(method, split, params)
        try:
            return align(xy, reference, split_ids(view.art.split, split), split_ids(align_to.art.split, split)), True
        except ValueError:  # fewer than 3 shared images
            return xy, False

    def point_columns(self, view: RunView, split: str, xy: np.ndarray, dim: int,
                      wanted: tuple[str, ...]) -> dict[str, np.ndarray | None]:
        """The `wanted` columns of a map's points (only those are read or computed: correct@1 needs a k-NN
        search); `xy` is the map (`map`)."""
        splits: tuple[Split, ...] = SPLITS if split == "all" else (split,)  # type: ignore[assignment]

        def column(get: Callable[[Split], np.ndarray | None], dtype: Any) -> Callable[[], np.ndarray | None]:
            def build() -> np.ndarray | None:
                parts = [get(s) for s in splits]
                return (None if any(p is None for p in parts) else
                        np.concatenate([np.asarray(p) for p in parts]).astype(dtype))
            return build

        getters: dict[str, Callable[[], np.ndarray | None]] = {
            "image_id": column(view.image_ids, np.int32),
            "label": column(view.labels, np.int32),
            "split": lambda: np.concatenate([np.full(len(view.image_ids(s)), SPLITS.index(s), np.int32)
                                             for s in splits]),
            "x": lambda: np.asarray(xy[:, 0], np.float32), "y": lambda: np.asarray(xy[:, 1], np.float32),
            "z": lambda: np.asarray(xy[:, 2], np.float32) if dim == 3 else None,
            "logdet": column(view.art.logdet, np.float32),
            "lipschitz": column(view.art.lipschitz, np.float32),
            "lipschitz_network": column(view.art.lipschitz_network, np.float32),  # NaN outside the sampled images
            "correct_at_1": column(view.correct_at_1, np.int32),
        }
        return {name: getters[name]() for name in wanted if name != "z" or dim == 3}

    def neighbours(self, view: RunView, image_id: int, k: int, within: Split | None
                   ) -> tuple[Split, int, np.ndarray, np.ndarray, Split]:
        """(split, row, neighbour rows, distances, searched split) of an image's k nearest, itself excluded."""
        split, row = view.locate(image_id)
        within = within or split
        self_id = np.array([row if within == split else -1])
        ids, values = view.index(within).search(view.embeddings(split)[row:row + 1], k, exclude_self_ids=self_id)
        return split, row, ids[0], values[0], within

    def query(self, view: RunView, data: bytes, k: int, within: Split) -> tuple[np.ndarray, np.ndarray]:
        """Neighbour rows and distances of an uploaded image among `within`, embedded by the run's model."""
        from models.data import DatasetError
        from models.inference import embed_images

        loaded = view.loaded()
        try:
            pixels = view.image_set.query_pixels(data, loaded.image_size, self.store.upload_limits(),
                                                 resize=loaded.model.eval_resize)
        except DatasetError as e:
            raise InvalidInput(str(e)) from None
        ids, values = view.index(within).search(embed_images(loaded.model, pixels), k)
        return ids[0], values[0]

    def compare(self, a: RunView, b: RunView, k: int, limit: int) -> Any:
        """models.compare.Comparison of two finished runs under each run's own distance (no model is loaded,
        so runs imported from TorchScript or as embeddings compare like trained ones)."""
        from models.compare import compare_runs

        same = a.rec.dataset_id == b.rec.dataset_id
        distances = (a.index("test").distance, b.index("test").distance) if same and limit > 0 else None
        return compare_runs(a.art, b.art, a.image_set.labels if same else None, k, limit, distances)
