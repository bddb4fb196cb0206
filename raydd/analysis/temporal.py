"""The temporal study (paper Sec. 3.3, Suppl. 11.2): naive DM with K synthetic frames, K = 1, 2, 4, ... T.

For each K, DM (raydd's :class:`~raydd.distill.loop.Distiller` and
:class:`~raydd.distill.methods.dm.DistributionMatching`) learns IPC videos of K frames per class,
matched to the real T-frame clips by uniform temporal segmentation (:mod:`raydd.analysis.segments`):
the matching network sees both sides at K frames, so its time and memory grow with K as they do for
synthetic videos of K frames. Each set is then stretched to T frames (frame k over segment k) and
scored by fresh networks on the real test split. The paper runs DM with CNN+GRU; so does the default.

Memory of one iteration (:class:`SavedBytes`, :func:`cuda_peak_mib`) is measured the same way on every device. The
paper reports GPU memory. A CPU has no peak-allocation counter, so raydd counts what the synthetic frames cost: the
bytes autograd keeps for the backward pass (every tensor saved by the forward, each storage once) plus the
synthetic tensors with their gradient and momentum buffer. On a CUDA device the allocator's peak is reported as
well.
"""

from __future__ import annotations

import contextlib
import dataclasses
import statistics
from collections.abc import Callable, Iterator, Sequence

import torch
from torch import nn

from raydd.analysis.segments import SegmentMatching, expand, segment_centres
from raydd.analysis.study_config import AnalyseConfig
from raydd.data.reader import PreparedDataset
from raydd.devices import pick_device
from raydd.distill.loop import SAMPLES, Distiller, LearningRate, SingleProcess, build_optimizer, sample_seed
from raydd.distill.methods.dm import DistributionMatching
from raydd.distill.real import RealData, should_keep_resident
from raydd.distill.synthetic import FreeTensors
from raydd.errors import RayddError
from raydd.evaluation.protocols import STANDARD, lr_and_epochs
from raydd.evaluation.report import summarize
from raydd.evaluation.sources import RealClips, TensorClips
from raydd.evaluation.train import TrainSettings, train_and_test
from raydd.models.registry import build_model

Log = Callable[[str], None]


@dataclasses.dataclass(frozen=True)
class TemporalRow:
    frames: int  # K, synthetic frames per video
    metrics: dict[str, float]  # top1_mean/_std (+ static/dynamic groups), percent, over the runs
    seconds_per_iteration: float  # mean DM iteration (after the first)
    graph_mib: float  # autograd's saved tensors + synthetic tensors, grads and optimiser state
    cuda_peak_mib: float | None  # the CUDA allocator's peak over the distillation, on CUDA only
    stored_values: int  # numbers stored by the synthetic set
    losses: tuple[float, ...]  # DM loss per iteration


def frame_counts(text: str, frames: int) -> tuple[int, ...]:
    """``all``: 1, 2, 4, ... below T, and T. Otherwise the listed counts, each within 1..T."""
    if text == "all":
        return tuple(sorted({2**i for i in range(frames.bit_length()) if 2**i < frames} | {frames}))
    counts = tuple(sorted({int(part) for part in text.split(",")}))
    bad = [k for k in counts if not 1 <= k <= frames]
    if bad:
        raise RayddError(
            f"--frames {text}: the dataset's clips have {frames} frames, "
            f"so each count must be 1 to {frames} (got {bad[0]})"
        )
    return counts


def _matching_network(
    model: str, width: int, num_classes: int, clip_shape: tuple[int, int, int, int], segments: int
) -> Callable[[], nn.Module]:
    t, h, w, c = clip_shape
    sizes = {"widths": (max(1, width // 2), width, width)} | ({} if model == "minic3d" else {"hidden": 2 * width})

    def build() -> nn.Module:  # called under a seeded RNG (fresh_network): the segment draws are seeded too
        generator = torch.Generator().manual_seed(int(torch.randint(0, 2**62, (1,))))
        net = build_model(model, num_classes=num_classes, clip_shape=(segments, h, w, c), **sizes)
        return SegmentMatching(net, frames=t, segments=segments, generator=generator)

    return build


def distill_frames(
    config: AnalyseConfig, dataset: PreparedDataset, segments: int, log: Log
) -> tuple[FreeTensors, TemporalRow]:
    """DM on K = ``segments`` frames; the row's metrics are left empty (see :func:`evaluate_frames`)."""
    device = pick_device(config.device)
    clip_shape = tuple(dataset.manifest.metadata["clip_shape"])
    _, h, w, c = clip_shape
    num_classes = len(dataset.classes)
    real = RealData(dataset.split("train"), dataset.mean, dataset.std, device, frames=False)
    if should_keep_resident(len(real.indices), clip_shape, device):
        real.keep_resident(real.rows_of(range(num_classes)))
    stage = f"temporal-{segments}"
    init = torch.Generator().manual_seed(sample_seed(config.seed, stage + "/init", 0, 0))
    initial = segment_centres(real.per_class(config.ipc, init), segments).cpu()
    synthetic = FreeTensors(num_classes, config.ipc, (c, segments, h, w), initial=initial).to(device)
    groups = [LearningRate("lr_img", [synthetic.values], config.lr_img)]
    method = DistributionMatching(
        _matching_network(config.model, config.width, num_classes, clip_shape, segments), batch_real=config.batch_real
    )
    distiller = Distiller(
        stage=stage,
        synthetic=synthetic,
        method=method,
        real=real,
        groups=groups,
        optimizer=build_optimizer(groups, kind="sgd", momentum=config.momentum),
        collective=SingleProcess(),
        samples_per_worker=1,
        seed=config.seed,
        device=device,
        split=SAMPLES,
    )
    saved, losses, seconds = SavedBytes(), [], []
    every = max(1, config.iterations // 5)
    cuda_peak_start(device)
    for i in range(config.iterations):
        if i == 0:
            with saved.counting(besides=[synthetic.values]):
                result = distiller.step(i)
        else:
            result = distiller.step(i)
            seconds.append(result.seconds)
        losses.append(result.loss)
        if (i + 1) % every == 0 or i + 1 == config.iterations:
            log(
                f"temporal: {segments} frame(s), DM iteration {i + 1}/{config.iterations}, "
                f"loss {result.loss:.4g}, {result.seconds:.3f} s"
            )
    state = [v for s in distiller.optimizer.state.values() for v in s.values() if isinstance(v, torch.Tensor)]
    tensors = [synthetic.values, synthetic.values.grad, *state]
    graph = saved.total + sum(x.numel() * x.element_size() for x in tensors if x is not None)
    row = TemporalRow(
        segments,
        {},
        statistics.fmean(seconds or [result.seconds]),
        graph / MIB,
        cuda_peak_mib(device),
        synthetic.stored_values(),
        tuple(losses),
    )
    return synthetic, row


def evaluate_frames(
    config: AnalyseConfig, dataset: PreparedDataset, synthetic: FreeTensors, log: Log
) -> dict[str, float]:
    """Train ``config.runs`` fresh networks on the set stretched to T frames; score them on the test split."""
    device = pick_device(config.device)
    clip_shape = tuple(dataset.manifest.metadata["clip_shape"])
    train = TensorClips(expand(synthetic.render(), clip_shape[0]).cpu(), synthetic.labels.cpu())
    test = RealClips(dataset.split("test"), dataset.mean, dataset.std)
    preset_lr, preset_epochs = lr_and_epochs(config.model, STANDARD)
    results = []
    for run in range(config.runs):
        settings = TrainSettings(
            config.model, config.epochs or preset_epochs, config.lr or preset_lr, 256, seed=config.seed + run
        )
        results.append(
            train_and_test(
                settings, train, test, num_classes=len(dataset.classes), clip_shape=clip_shape, device=device, run=run
            )
        )
        log(
            f"temporal: {synthetic.values.shape[2]} frame(s), evaluation run {run + 1}/{config.runs}: "
            f"top-1 {100 * results[-1].top1:.1f} %"
        )
    return summarize(results, dataset.classes, dataset.spec.static_classes)


def run_temporal(config: AnalyseConfig, dataset: PreparedDataset, log: Log = print) -> list[TemporalRow]:
    rows = []
    for segments in frame_counts(config.frames, int(dataset.manifest.metadata["clip_shape"][0])):
        synthetic, row = distill_frames(config, dataset, segments, log)
        rows.append(dataclasses.replace(row, metrics=evaluate_frames(config, dataset, synthetic, log)))
    return rows


MIB = 2**20


class SavedBytes:
    """Bytes of the distinct storages autograd saves while the context is open (:meth:`counting`)."""

    def __init__(self) -> None:
        self.total = 0
        self._seen: set[int] = set()

    def _pack(self, tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in self._seen:
            self._seen.add(storage.data_ptr())
            self.total += storage.nbytes()
        return tensor

    @contextlib.contextmanager
    def counting(self, *, besides: Sequence[torch.Tensor] = ()) -> Iterator[SavedBytes]:
        """``besides``: tensors counted elsewhere (the synthetic set), left out when autograd saves them."""
        self.total, self._seen = 0, {t.untyped_storage().data_ptr() for t in besides}
        with torch.autograd.graph.saved_tensors_hooks(self._pack, lambda tensor: tensor):
            yield self


def cuda_peak_start(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def cuda_peak_mib(device: torch.device) -> float | None:
    """The CUDA allocator's peak since :func:`cuda_peak_start`, or ``None`` off CUDA."""
    if device.type != "cuda":
        return None
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device) / MIB
