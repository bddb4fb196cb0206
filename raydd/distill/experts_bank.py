"""The expert trajectories MTT matches against, opened once per worker and read one epoch at a time."""

from __future__ import annotations

import torch

from raydd.errors import RayddError
from raydd.experts.trajectories import EXPERTS_KIND, ModelSpec, Trajectory, listed_records, shard_name
from raydd.storage import open_manifest, resolve


class ExpertBank:
    def __init__(self, folder_uri: str, *, make_them: str) -> None:
        """``make_them``: the command that trains these experts (named when they are missing)."""
        self.folder = resolve(folder_uri)
        records = listed_records(
            open_manifest(self.folder, EXPERTS_KIND, what="expert trajectories", make_it=make_them)
        )
        if not records:
            raise RayddError(f"{self.folder} lists no finished expert: train them with `{make_them}`")
        self.experts = sorted(records)
        self._open: dict[int, Trajectory] = {}
        self.spec: ModelSpec = self._trajectory(0).spec
        self.num_epochs = min(self._trajectory(i).num_epochs for i in range(len(self.experts)))

    @property
    def num_experts(self) -> int:
        return len(self.experts)

    def _trajectory(self, position: int) -> Trajectory:
        if position not in self._open:
            self._open[position] = Trajectory(self.folder.child(shard_name(self.experts[position])))
        return self._open[position]

    def require_epochs(self, needed: int) -> None:
        if self.num_epochs < needed:
            raise RayddError(
                f"experts at {self.folder} have {self.num_epochs} epochs but max_start_epoch + expert_epochs needs "
                f"{needed}: "
                f"retrain them with --epochs {needed} or lower --max-start-epoch"
            )

    def check_fits(self, num_classes: int, clip_shape: tuple[int, ...]) -> None:
        if self.spec.num_classes != num_classes or tuple(self.spec.clip_shape) != tuple(clip_shape):
            raise RayddError(
                f"experts at {self.folder} were trained for {self.spec.num_classes} classes of shape "
                f"{tuple(self.spec.clip_shape)}, "
                f"not {num_classes} of {tuple(clip_shape)}: retrain them on this dataset with `python -m raydd.experts`"
            )

    def epoch(self, position: int, t: int) -> torch.Tensor:
        return self._trajectory(position).epoch(t)

    def close(self) -> None:
        for trajectory in self._open.values():
            trajectory.close()
        self._open.clear()
