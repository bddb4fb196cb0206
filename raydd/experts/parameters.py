"""A network as a flat parameter vector: :class:`ModelSpec` rebuilds the network and names the vector's pieces.

Expert trajectories store, and MTT matches, the parameters of a network as one flat float32 vector in
``model.parameters()`` order; the spec is what turns such a vector back into named tensors of their shapes.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from raydd.errors import RayddError
from raydd.models.registry import build_model


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild the network a trajectory belongs to and to unflatten its vectors."""

    name: str
    num_classes: int
    clip_shape: tuple[int, int, int, int]
    options: dict[str, Any]  # keyword arguments of the model factory (e.g. widths)
    parameters: tuple[tuple[str, tuple[int, ...]], ...]  # (name, shape) in model.parameters() order

    @classmethod
    def of(cls, name: str, *, num_classes: int, clip_shape: Sequence[int], options: dict[str, Any]) -> ModelSpec:
        model = build_model(name, num_classes=num_classes, clip_shape=tuple(clip_shape), **options)
        parameters = tuple((key, tuple(value.shape)) for key, value in model.named_parameters())
        return cls(name, num_classes, tuple(clip_shape), dict(options), parameters)

    @property
    def num_params(self) -> int:
        return sum(int(np.prod(shape)) for _, shape in self.parameters)

    def build(self) -> nn.Module:
        return build_model(self.name, num_classes=self.num_classes, clip_shape=self.clip_shape, **self.options)

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> ModelSpec:
        parameters = tuple((name, tuple(shape)) for name, shape in raw["parameters"])
        return cls(raw["name"], raw["num_classes"], tuple(raw["clip_shape"]), dict(raw["options"]), parameters)


def flatten_parameters(model: nn.Module) -> torch.Tensor:
    """The model's parameters as one float32 CPU vector, in ``model.parameters()`` order."""
    return torch.cat([p.detach().reshape(-1).to("cpu", torch.float32) for p in model.parameters()])


def unflatten_parameters(vector_P: torch.Tensor, spec: ModelSpec) -> dict[str, torch.Tensor]:
    """Split a flat parameter vector into ``{name: tensor of its shape}`` (views of ``vector_P``)."""
    if vector_P.numel() != spec.num_params:
        raise RayddError(
            f"a parameter vector of {vector_P.numel()} values does not fit {spec.name} with {spec.num_params} "
            "parameters"
        )
    sizes = [int(np.prod(shape)) for _, shape in spec.parameters]
    chunks = torch.split(vector_P, sizes)
    return {name: chunk.view(shape) for (name, shape), chunk in zip(spec.parameters, chunks)}


def load_parameters(model: nn.Module, vector_P: torch.Tensor, spec: ModelSpec) -> None:
    """Copy a flat parameter vector into ``model`` by name and shape."""
    named = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in unflatten_parameters(vector_P, spec).items():
            named[name].copy_(value)
