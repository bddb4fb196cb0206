"""A distillation stage as a Ray Train ``TorchTrainer`` run.

Every worker builds the stage from its :class:`~raydd.distill.stages.StageSpec`, runs the iterations
(gradients all-reduced over torch.distributed: gloo on CPU, NCCL on GPU) and, every
``checkpoint_every`` iterations, reports a checkpoint (rank 0 writes it) to the run folder in the
store, ``s3://`` included. The run folder's name is fixed by the stage's settings, so Ray Train's
``FailureConfig`` restarts and a re-run of the same command both resume from the latest checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import pickle
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from raydd import faults, metrics
from raydd.console import ray_train_log_level
from raydd.data.cache import admit, cache_entry, file_sha256, local_shard
from raydd.devices import pick_device
from raydd.distill.loop import SingleProcess, TorchDistributed
from raydd.distill.progress import Progress
from raydd.distill.stages import STATIC, StageSpec, build_stage
from raydd.errors import RayddError
from raydd.storage import Location, ShardRecord, exists, read_bytes, resolve
from raydd.tracking import NullTracker, RunAddress, Tracker

STATE_FILE = "state.pt"
KEPT_CHECKPOINTS = 2
# Ray Train (2.60) patches a worker's print to log each line through the root logger (to the worker's stderr) and,
# because Ray wraps the worker's stdout, to also print it there: Ray then forwards every line twice to the driver.
# Without the patch a print goes once to stdout, which Ray forwards once.
WORKER_ENV = {"RAY_TRAIN_ENABLE_PRINT_PATCH": "0"}
RECORD_FILE = "state.json"  # the state's bytes and SHA-256: its name in the node cache


@dataclasses.dataclass(frozen=True)
class RunSettings:
    iterations: int
    checkpoint_every: int
    workers: int = 1
    use_gpu: bool = False
    cpus_per_worker: float = 1.0
    max_failures: int = 0
    log_every: int = 10  # iterations between live MLflow batches
    progress_every_s: float = 30.0  # a progress line at least this often (and at every tenth of the stage)


def _ray_train_worker_logs_at_our_level() -> None:
    """Ray Train's per-report INFO line ("Reporting training result N: TrainingReport(...)") is logged in each worker
    by a logger named after its module's file, outside the ``ray.train`` logger that ``LoggingConfig`` sets: set
    it to :func:`raydd.console.ray_train_log_level` here."""
    try:
        from ray.train.v2._internal.execution import context as train_context
    except ImportError:  # a private module: a Ray that moved it may print its lines, and nothing else changes
        return
    logging.getLogger(train_context.__file__).setLevel(ray_train_log_level())


def _worker(config: dict[str, Any]) -> None:
    import ray.train

    _ray_train_worker_logs_at_our_level()
    spec: StageSpec = config["spec"]
    run: RunSettings = config["run"]
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    torch.set_num_threads(max(1, int(run.cpus_per_worker)))
    device = ray.train.torch.get_device() if run.use_gpu else pick_device(spec.device)
    distiller = build_stage(spec, TorchDistributed() if world > 1 else SingleProcess(), device)
    if distiller.real.resident_clips and rank == 0:
        print(f"[{spec.stage}] {distiller.real.resident_clips} real clips resident on {device} (uint8)", flush=True)
    start, history = 0, {"loss": [], "seconds": [], "samples": []}
    saved_at = time.time()  # age of the work a crash would lose: since the last checkpoint, else since the start
    tags = {"stage": spec.stage, "method": spec.method, "dataset": spec.dataset_uri.rstrip("/").rsplit("/", 1)[-1]}
    cached_states: list[ShardRecord] = []
    runs = resolve(config["runs"])
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        state = read_checkpoint(checkpoint, runs, device)
        start, history, saved_at = distiller.restore(state), state["history"], state.get("saved_at", saved_at)
        if rank == 0:
            print(f"[{spec.stage}] resuming at iteration {start}/{run.iterations} from the last checkpoint", flush=True)
    if rank == 0:
        print(f"[{spec.stage}] run {config['name']}: iterations {start + 1}..{run.iterations}", flush=True)
    progress = Progress(spec.stage, run.iterations, start, every_s=run.progress_every_s)
    live: Tracker = NullTracker()
    tracking: RunAddress | None = config.get("tracking") if rank == 0 else None
    if (
        tracking is not None
        and tracking.machine_local
        and ray.get_runtime_context().get_node_id() != config["driver_node"]
    ):
        print(
            f"[{spec.stage}] the MLflow store ({tracking.tracking_uri}) is on the driver's machine, not on this "
            "worker's node: the stage's curves go to MLflow when it ends",
            flush=True,
        )
    elif tracking is not None:
        live = tracking.open()
    logged = start  # history[:logged] is in MLflow (a resumed attempt re-sends what its predecessor sent since then)
    for iteration in range(start, run.iterations):
        result = distiller.step(iteration)
        for key, value in (("loss", result.loss), ("seconds", result.seconds), ("samples", result.samples)):
            history[key].append(value)
        if rank == 0:
            metrics.record_distill_iteration(
                loss=result.loss,
                seconds=result.seconds,
                samples=result.samples,
                checkpoint_age_s=time.time() - saved_at,
                tags=tags,
            )
        if rank == 0 and (line := progress.update(iteration + 1, result.loss)) is not None:
            print(line, flush=True)
        if (iteration + 1) % run.log_every == 0 or iteration + 1 == run.iterations:
            live.log_series(stage_curves(spec.stage, history, logged), start=logged)
            logged = iteration + 1
        if rank == 0 and spec.stage != STATIC:  # the last stage: naive, or static-dynamic's stage 2
            faults.fire("fail_at_iteration", iteration, scope=runs.child(config["name"]), settle=_committed)
        if (iteration + 1) % run.checkpoint_every == 0 or iteration + 1 == run.iterations:
            distiller.synchronise()  # every worker: under --worker-split classes each holds only its classes' rows
            reported = {
                "iteration": iteration + 1,
                "loss": result.loss,
                "samples_per_s": result.samples / result.seconds,
            }
            if rank == 0:
                saved_at = time.time()
                with tempfile.TemporaryDirectory() as folder:
                    state = {**distiller.state(iteration + 1), "history": history, "saved_at": saved_at}
                    cached_states.append(write_checkpoint_folder(Path(folder), state, cache=not runs.is_local))
                    ray.train.report(reported, checkpoint=ray.train.Checkpoint.from_directory(folder))
                while (
                    len(cached_states) > KEPT_CHECKPOINTS and not runs.is_local
                ):  # the cache keeps what Ray Train keeps
                    cache_entry(cached_states.pop(0)).unlink(missing_ok=True)
            else:
                ray.train.report(reported, checkpoint=None)


def _committed() -> None:
    """Wait until Ray Train has committed this worker's reports: a worker lost after that (as a fault makes it)
    restarts from the last checkpoint it reported, not from an earlier one the controller had not taken in."""
    import ray.train

    ray.train.get_all_reported_checkpoints(consistency_mode=ray.train.CheckpointConsistencyMode.COMMITTED)


def stage_curves(stage: str, history: dict[str, list[float]], start: int = 0) -> dict[str, list[float]]:
    """The MLflow curves of a stage's history from iteration ``start`` on."""
    return {
        f"{stage}/loss": history["loss"][start:],
        f"{stage}/seconds_per_iteration": history["seconds"][start:],
        f"{stage}/samples_per_second": [n / s for n, s in zip(history["samples"][start:], history["seconds"][start:])],
    }


def _storage(runs: Location) -> tuple[str, Any]:
    if runs.is_local:
        Path(runs.path).mkdir(parents=True, exist_ok=True)
        return runs.path, None
    from pyarrow.fs import FSSpecHandler, PyFileSystem

    return runs.path, PyFileSystem(FSSpecHandler(runs.fs))


def fit_stage(
    spec: StageSpec, run: RunSettings, *, runs: Location, name: str, tracking: RunAddress | None = None
) -> dict[str, Any]:
    """Run (or resume) one stage under Ray Train; returns the final state (synthetic tensors, history).
    ``tracking``: the MLflow run that rank 0 sends the stage's curves to every ``log_every`` iterations."""
    import ray
    from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    path, filesystem = _storage(runs)
    trainer = TorchTrainer(
        _worker,
        train_loop_config={
            "spec": spec,
            "run": run,
            "runs": runs.uri,
            "name": name,
            "tracking": tracking,
            "driver_node": ray.get_runtime_context().get_node_id(),
        },
        torch_config=TorchConfig(backend="nccl" if run.use_gpu else "gloo"),
        scaling_config=ScalingConfig(
            num_workers=run.workers,
            use_gpu=run.use_gpu,
            resources_per_worker={"CPU": run.cpus_per_worker, **({"GPU": 1} if run.use_gpu else {})},
        ),
        run_config=RunConfig(
            name=name,
            storage_path=path,
            storage_filesystem=filesystem,
            failure_config=FailureConfig(max_failures=run.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=KEPT_CHECKPOINTS),
            worker_runtime_env={"env_vars": {**WORKER_ENV, **faults.environment()}},
            logging_config=LoggingConfig(log_level=ray_train_log_level()),
        ),
    )
    try:
        result = trainer.fit()
    except Exception as error:  # Ray Train wraps worker errors; keep the user's one line
        raise RayddError(_first_line(error, spec)) from None
    if result.checkpoint is None:
        raise RayddError(
            f"stage {spec.stage} finished without a checkpoint in {runs.child(name)}: re-run the same command"
        )
    return read_checkpoint(result.checkpoint, runs, torch.device("cpu"))


def write_checkpoint_folder(folder: Path, state: dict[str, Any], *, cache: bool) -> ShardRecord:
    """``state.pt`` and its record (bytes, SHA-256). With ``cache`` (a remote run folder) the state also goes into
    the node cache, so that a worker restarted on this node (and a driver on it) resumes without fetching back
    what this node just uploaded; a local run folder is read in place."""
    torch.save(state, folder / STATE_FILE)
    record = ShardRecord(STATE_FILE, 1, (folder / STATE_FILE).stat().st_size, file_sha256(folder / STATE_FILE))
    (folder / RECORD_FILE).write_text(json.dumps(dataclasses.asdict(record)))
    if cache:
        admit(folder / STATE_FILE, record)
    return record


def read_checkpoint(checkpoint: Any, runs: Location, device: torch.device) -> dict[str, Any]:
    """The state of a Ray Train checkpoint in the run folder ``runs``: through the node cache (one fetch per
    node, checked against its record), or, for a checkpoint without a record, Ray's own download."""
    prefix = runs.uri[: len(runs.uri) - len(runs.path)] if runs.uri.endswith(runs.path) else ""
    folder = Location(uri=prefix + checkpoint.path, fs=runs.fs, path=checkpoint.path)
    if not exists(folder.child(RECORD_FILE)):
        with checkpoint.as_directory() as local:
            return load_state(Path(local) / STATE_FILE, device)
    record = ShardRecord(**json.loads(read_bytes(folder.child(RECORD_FILE))))
    return load_state(Path(local_shard(folder.child(STATE_FILE), record)), device)


def load_state(path: Path, device: torch.device) -> dict[str, Any]:
    """A checkpoint's state, unpickled with ``weights_only=True``: it holds only tensors, dicts, lists and
    numbers, and anyone who can write to a shared store must not be able to run code on the workers."""
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise RayddError(
            f"checkpoint {path} holds more than tensors and numbers ({first}): refused; delete its run folder "
            "and re-run the command, or restore the checkpoint from a trusted copy"
        ) from None


def _first_line(error: BaseException, spec: StageSpec) -> str:
    text = str(error)
    for marker in ("RayddError: ", "raydd.errors.RayddError: "):
        if marker in text:
            return text.split(marker, 1)[1].splitlines()[0]
    last = [line for line in text.splitlines() if line.strip()]
    cause = last[-1] if last else type(error).__name__
    return f"stage {spec.stage} failed: {cause}; re-run the same command to resume from its last checkpoint"
