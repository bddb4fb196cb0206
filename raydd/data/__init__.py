"""Video data: the dataset registry, raw layouts, decoding, Arrow shards, and readers.

``raydd.data`` gives a torch dataset over a prepared dataset (:class:`PreparedVideos`) and a Ray Data
dataset over the same shards (:func:`ray_dataset`).
"""

from raydd.data.reader import PreparedDataset, PreparedVideos, open_prepared
from raydd.data.specs import DatasetSpec, dataset_names, get_spec

__all__ = ["DatasetSpec", "PreparedDataset", "PreparedVideos", "dataset_names", "get_spec", "open_prepared", "ray_dataset"]


def ray_dataset(uri: str, split: str = "train"):  # noqa: ANN201 - keep Ray out of the import graph
    """A Ray Data dataset over one split of a prepared dataset (see :mod:`raydd.data.ray_reader`)."""
    from raydd.data.ray_reader import ray_dataset as build

    return build(uri, split)
