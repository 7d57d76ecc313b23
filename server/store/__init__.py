"""The store: SQLite metadata (datasets, runs) plus artifact folders under the data directory.

`Store` is one object over one data folder, assembled from its halves: `base` (connection, migrations, ids,
paths, start-up clean-up), `datasets` (dataset records, imports, limits, the ImageSet cache) and `runs` (run
records and their lifecycle columns). Import names from here; the halves are an implementation detail.
"""
from server.store.base import ID_PATTERN, _MIGRATIONS, atomic_write_bytes, check_id, new_id, now
from server.store.datasets import IMPORT_INTERRUPTED, DatasetRecord, DatasetStore
from server.store.runs import ACTIVE, STATUSES, TERMINAL, RunRecord, RunStore


class Store(DatasetStore, RunStore):
    """Thread-safe access to the metadata database and the artifact folders of one data directory."""


__all__ = ["ACTIVE", "ID_PATTERN", "IMPORT_INTERRUPTED", "STATUSES", "TERMINAL", "_MIGRATIONS", "DatasetRecord",
           "RunRecord", "Store", "atomic_write_bytes", "check_id", "new_id", "now"]
