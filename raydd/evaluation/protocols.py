"""The evaluation protocol: how a fresh network is trained on a training set and scored.

It reports the final epoch's test accuracy (nothing is selected on the test split), with SGD (momentum, weight
decay, lr x0.1 once, from the flags and the lr schedule), and the training recipe of the paper's own evaluation
(yuz1wan/video_distillation, ``utils.evaluate_synset``):

* every training batch re-standardised as a whole, ``(x - mean(x)) / std(x)``;
* a static-dynamic set re-paired on every fetch (video slot k of a class draws one of its stills
  {s*k .. s*k+s-1} and one of its memories {d*k .. d*k+d-1}, s = SPC/IPC, d = DPC/IPC, rendered through the
  stored H), so an epoch sees IPC videos per class;
* MiniC3D's dropout-max head;
* ``epochs + 1`` passes, the lr cut after pass ``epochs // 2 + 1`` with a fresh optimiser (momentum restarts);
* test batches of 64.

Unlike the reference it is inductive: the reference standardises a test batch with its own statistics, so a clip's
score depends on the 64 clips beside it. Here every test clip is standardised with the mean and std of the training
batches the network saw (``test_statistics="train"``): the inductive counterpart of what training did, chosen
before measuring, on that ground. The measured effect on the main job's rows, against the test batch's statistics
and each clip's own, is in ``docs/results/2026-12-07-test-standardisation.md`` (``benchmarks/protocol_ablation.py``,
which also keeps raydd's old recipe, fixed rendered pairs and an average head, as a variant).

Evaluation presets (Suppl. 11.3, :func:`lr_and_epochs`): learning rate and epochs per model and kind of distilled
set. MiniC3D: lr 1e-2 for 500 epochs, but lr 1e-4 for 1000 epochs on FRePo sets; CNN+GRU / CNN+LSTM: lr 1e-2 for
100 epochs. The frame-only ConvNet is raydd's probe, not the paper's: lr 1e-2, 300 epochs. These epoch counts were
set for distilled sets of 1-5 clips per class; on full real data pass ``--epochs`` (the steps per epoch grow with
the data). A distilled set's manifest names its preset (``eval_preset``).
"""

from __future__ import annotations

import dataclasses

import torch

from raydd.errors import RayddError


@dataclasses.dataclass(frozen=True)
class Protocol:
    """The parts of an evaluation recipe: :data:`PROTOCOL` is raydd's; ``benchmarks/protocol_ablation.py`` varies
    them one at a time."""

    name: str
    restandardise_batches: bool  # every training batch (x - x.mean()) / x.std(); test batches: test_statistics
    repair_static_dynamic: bool  # static-dynamic sets: a random (still, memory) pair per slot on every fetch
    head: str  # MiniC3D's head (raydd.models.minic3d.HEADS)
    extra_pass: bool  # epochs + 1 passes, the lr cut after pass epochs // 2 + 1 (the reference's loop)
    fresh_optimizer_at_cut: bool  # the reference builds a new SGD at the cut: momentum buffers restart
    test_batch_size: int
    # With restandardise_batches, the mean and std a test clip is standardised with: "train", those of every
    # training batch the network saw, pooled (nothing read from other test clips); "clip", its own; "batch", its
    # test batch's, as the reference does (its one transductive trait: a clip's score depends on its neighbours).
    test_statistics: str = "train"

    def __post_init__(self) -> None:
        if self.test_statistics not in TEST_STATISTICS:
            raise RayddError(f"test_statistics {self.test_statistics!r}: use one of {', '.join(TEST_STATISTICS)}")

    def passes(self, epochs: int) -> int:
        return epochs + 1 if self.extra_pass else epochs

    def cut_at(self, epochs: int) -> int:
        """Index of the first pass trained at lr x0.1 (``passes(epochs)`` or more: never cut)."""
        return epochs // 2 + 2 if self.extra_pass else max(1, epochs // 2)

    def prepare(self, inputs: torch.Tensor) -> torch.Tensor:
        """What the network sees of a training batch."""
        if not self.restandardise_batches:
            return inputs
        return (inputs - inputs.mean()) / inputs.std().clamp_min(1e-12)

    def prepare_test(self, inputs: torch.Tensor, seen: InputStatistics) -> torch.Tensor:
        """What the network sees of a test batch; ``seen``: the statistics of the training batches it was fed."""
        if not self.restandardise_batches:
            return inputs
        if self.test_statistics == "batch":
            return self.prepare(inputs)
        if self.test_statistics == "clip":
            dims = tuple(range(1, inputs.dim()))
            mean, std = inputs.mean(dims, keepdim=True), inputs.std(dims, keepdim=True)
            return (inputs - mean) / std.clamp_min(1e-12)
        mean, std = seen.mean_std()
        return (inputs - mean) / std.clamp_min(1e-12)


TEST_STATISTICS = ("train", "clip", "batch")


class InputStatistics:
    """Running mean and std over every element of the batches given to :meth:`add`; the sums stay on the batches'
    device (no host sync per batch)."""

    # Elements cast to float64 at a time (2 MB): the sums need float64, a whole batch's float64 copy is not needed.
    CHUNK = 1 << 18

    def __init__(self) -> None:
        self._count = 0
        self._sums: torch.Tensor | None = None  # (sum, sum of squares), float64

    def add(self, inputs: torch.Tensor) -> None:
        """Sums a chunk at a time in float64. A float32 (or bf16) value's square is exact in float64, so the sums
        are those of a whole-batch float64 copy up to the order of the additions; squaring in float32 first would
        round every term. ``sum(dtype=torch.float64)`` is no way out: on CPU it casts the whole input internally
        (torch 2.14.1)."""
        flat = inputs.detach().reshape(-1)
        sums = torch.zeros(2, dtype=torch.float64, device=flat.device)
        for chunk in flat.split(self.CHUNK):
            part = chunk.double()
            sums += torch.stack([part.sum(), torch.dot(part, part)])
        self._sums = sums if self._sums is None else self._sums + sums
        self._count += flat.numel()

    def mean_std(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._sums is None:
            raise RayddError("no training batch was seen: the training set is empty")
        mean, squares = self._sums / self._count
        return mean.float(), (squares - mean.square()).clamp_min(0).sqrt().float()


# The name every evaluation records (MLflow's raydd.protocol, a table's header): the reference's recipe, inductive.
PROTOCOL = Protocol(
    "reference-inductive",
    restandardise_batches=True,
    repair_static_dynamic=True,
    head="dropout-max",
    extra_pass=True,
    fresh_optimizer_at_cut=True,
    test_batch_size=64,
    test_statistics="train",
)


STANDARD, FREPO = "standard", "frepo"
PRESET_NAMES = ("auto", STANDARD, FREPO)

_PRESETS: dict[str, dict[str, tuple[float, int]]] = {
    "minic3d": {STANDARD: (1e-2, 500), FREPO: (1e-4, 1000)},
    "cnn_gru": {STANDARD: (1e-2, 100), FREPO: (1e-2, 100)},
    "cnn_lstm": {STANDARD: (1e-2, 100), FREPO: (1e-2, 100)},
    "convnet": {STANDARD: (1e-2, 300), FREPO: (1e-4, 1000)},
}


def lr_and_epochs(model: str, preset: str) -> tuple[float, int]:
    return _PRESETS[model][preset]
