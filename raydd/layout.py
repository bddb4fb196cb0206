"""The store's layout: the one place that knows the store's folder names and the default store.

A store is one URI (a local folder, ``s3://bucket/prefix``, ...) holding everything raydd makes::

    STORE/datasets/DATASET                     prepared video shards (python -m raydd.prepare)
    STORE/experts/DATASET/MODEL                expert trajectory shards (python -m raydd.experts)
    STORE/distill/static/DATASET/NAME          stage-1 still images, reused across stage-2 runs
    STORE/distill/runs/NAME                    Ray Train checkpoints of running stages
    STORE/distilled/DATASET/NAME               distilled sets (python -m raydd.distill)
    STORE/tune/NAME                            sweeps (python -m raydd.tune)
    STORE/mlflow.db                            MLflow tracking (local stores; see raydd.tracking)

The default store is ``$RAYDD_STORE``, else ``./raydd-store``, read when a command runs (not when a module
is imported), so a test or a job can set it after import.
"""

from __future__ import annotations

import dataclasses
import os

from raydd.storage import Location, resolve

STORE_VARIABLE = "RAYDD_STORE"
FALLBACK_STORE = "raydd-store"
DATASETS, EXPERTS, DISTILL, DISTILLED, TUNE = "datasets", "experts", "distill", "distilled", "tune"
MLFLOW_DB = "mlflow.db"


def default_store() -> str:
    """``$RAYDD_STORE`` if set, else ``raydd-store`` (relative to the working directory)."""
    return os.environ.get(STORE_VARIABLE) or FALLBACK_STORE


@dataclasses.dataclass(frozen=True)
class StoreLayout:
    root: Location

    @classmethod
    def of(cls, store: str | None = None) -> StoreLayout:
        """The layout of ``store`` (``None``: :func:`default_store`)."""
        return cls(resolve(store or default_store()))

    def dataset(self, name: str) -> Location:
        return self.root.child(DATASETS, name)

    def experts(self, dataset: str, model: str) -> Location:
        return self.root.child(EXPERTS, dataset, model)

    def static(self, dataset: str, name: str) -> Location:
        return self.root.child(DISTILL, "static", dataset, name)

    def runs(self) -> Location:
        return self.root.child(DISTILL, "runs")

    def distilled(self, dataset: str, name: str) -> Location:
        return self.root.child(DISTILLED, dataset, name)

    def tune(self, name: str | None = None) -> Location:
        return self.root.child(TUNE, name) if name else self.root.child(TUNE)

    def mlflow_db(self) -> Location:
        return self.root.child(MLFLOW_DB)
