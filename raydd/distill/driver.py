"""The engine of ``python -m raydd.distill``: stage 1 (or its reuse), stage 2 (or naive), the artifact,
the MLflow run, and the evaluation at the end. Ray Train runs the stages (:mod:`.ray_train`).

The run's MLflow params (:func:`run_params`): the run flags the command was given (unset ones, ``None``, are left
out), the preset it resolved, once, as ``preset.*``, and stage 1's differences as ``static_preset.*``. The preset
override flags are not logged again beside ``preset.*``: ``raydd.preset_flags`` tags which ones were given."""

from __future__ import annotations

import dataclasses
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from raydd.classes import class_major_labels
from raydd.cluster import capacity
from raydd.config import resolve_defaults, to_dict
from raydd.data.reader import PreparedDataset, open_prepared
from raydd.distill.artifact import read_static, static_exists, write_static_dynamic_state
from raydd.distill.borrow import Borrowed
from raydd.distill.methods.catalog import method_info
from raydd.distill.presets import PRESET_FIELDS as DECLARED_PRESET_FIELDS
from raydd.distill.presets import UNREAD_BY_STAGE1, Preset
from raydd.distill.preview import preview_gif, stills_png
from raydd.distill.ray_train import RunSettings, fit_stage, stage_curves
from raydd.distill.settings import DistillConfig, settings_hash
from raydd.distill.stage_presets import RunPresets
from raydd.distill.stages import DYNAMIC, NAIVE, STATIC, StageSpec, fit_and_write_static, stage_model
from raydd.distilled_set import load_distilled, write_distilled
from raydd.errors import RayddError
from raydd.experts.trajectories import EXPERTS_KIND
from raydd.layout import StoreLayout
from raydd.parallel import ensure_ray
from raydd.resources import auto_cpus_per_worker, auto_use_gpu
from raydd.storage import Location, Manifest, manifest_or_none, open_manifest, require_writable_root, resolve
from raydd.tracking import Tracker, end_killed_run, mlflow_run


@dataclasses.dataclass(frozen=True)
class DistillOutcome:
    output: str
    manifest: Manifest
    static_uri: str | None
    evaluation: dict[str, float]
    seconds: float


def _experts_uri(config: DistillConfig, layout: StoreLayout, dataset: PreparedDataset, model: str) -> str:
    # --experts names stage 2's / naive's experts; stage 1's are always the store's.
    uri = (
        config.experts
        if config.experts and model == stage_model(NAIVE)
        else layout.experts(dataset.spec.name, model).uri
    )
    make_it = f"python -m raydd.experts --dataset {dataset.spec.name} --model {model} --store {config.store}"
    open_manifest(resolve(uri), EXPERTS_KIND, what="expert trajectories", make_it=make_it)
    return uri


def _stage_key(spec: StageSpec, exclude: tuple[str, ...] = ()) -> str:
    data = dataclasses.asdict(spec)
    data["preset"] = {k: v for k, v in data["preset"].items() if k not in exclude}
    data.pop("device")  # how it is computed, not what
    # A precision under which the method computes in bf16 gives other values than fp32: such a run must neither
    # resume nor reuse an fp32 run's checkpoints. Any other is left out, so that fp32 runs keep their names.
    if data["preset"].get("precision") not in method_info(spec.method).lower_precisions:
        data["preset"].pop("precision", None)
    return settings_hash(data)


def distill(config: DistillConfig, presets: RunPresets) -> DistillOutcome:
    """Distil ``config`` with the presets resolved at the command's edge (:func:`.stage_presets.resolve_presets`)."""
    started = time.perf_counter()
    config = resolve_defaults(config)  # a config built in code may leave the store to $RAYDD_STORE
    preset, static_method, static_preset, borrowed = (
        presets.run,
        presets.stage1_method,
        presets.stage1,
        presets.borrowed,
    )
    if borrowed is not None:
        print(
            f"preset: {config.dataset} has no preset of its own; borrowed {config.method} {config.paradigm} "
            f"{borrowed.dataset} IPC {borrowed.ipc} (the nearest row by IPC, clip shape and class count; "
            "python -m raydd.tune finds better settings)",
            flush=True,
        )
    layout = StoreLayout.of(config.store)
    require_writable_root(layout.root)
    dataset = open_prepared(layout.dataset(config.dataset).uri)
    base = StageSpec(
        stage=NAIVE,
        method=config.method,
        dataset_uri=str(dataset.location.uri),
        ipc=config.ipc,
        preset=preset,
        seed=config.seed,
        samples_per_worker=config.samples_per_worker,
        memory_bounded=config.memory_bounded,
        device=config.device,
        split=config.worker_split,
    )
    needs_experts = method_info(config.method).needs_experts
    video_experts = _experts_uri(config, layout, dataset, stage_model(NAIVE)) if needs_experts else None
    identity = {
        "spec": _stage_key(base),
        "paradigm": config.paradigm,
        "iterations": preset.iterations,
        "static": config.static,
        "workers": config.workers,
    }
    if config.paradigm != "naive" and static_method != config.method:  # only then: other runs keep their names
        identity["stage1"] = {"method": static_method, "preset": static_preset.to_dict()}
    key = settings_hash(identity)
    output = (
        resolve(config.output)
        if config.output
        else layout.distilled(dataset.spec.name, f"{config.method}-{config.paradigm}-ipc{config.ipc}-{key}")
    )
    existing = manifest_or_none(output)
    if existing is not None and not config.overwrite:
        print(
            f"{output} already holds this distilled set: nothing to do (--overwrite distils it again)", file=sys.stderr
        )
        end_killed_run(config.store, config.experiment, key, "a re-run found the distilled set complete")
        return DistillOutcome(output.uri, existing, existing.metadata.get("static_uri"), {}, 0.0)
    ensure_ray(config.ray_address)
    cluster = capacity()
    use_gpu = auto_use_gpu(config.use_gpu, cluster)
    run_settings = RunSettings(
        iterations=preset.iterations,
        checkpoint_every=config.checkpoint_every,
        workers=config.workers,
        use_gpu=use_gpu,
        cpus_per_worker=auto_cpus_per_worker(config.cpus_per_worker, config.workers, use_gpu, cluster),
        max_failures=config.max_failures,
        progress_every_s=5.0 if sys.stdout.isatty() else 30.0,
    )
    runs = layout.runs()
    tags = {
        "raydd.dataset": dataset.spec.name,
        "raydd.dataset_manifest_sha256": dataset.manifest.content_sha256(),
        "raydd.method": f"{config.method}-{config.paradigm}",
    }
    tags["raydd.preset_flags"] = preset_flags(config)
    name = f"{config.method}-{config.paradigm}-ipc{config.ipc}-{dataset.spec.name}-{key}"  # key: the output's
    params = run_params(config, preset, static_preset, static_method, borrowed)
    opened = mlflow_run(config.store, config.experiment, name, to_dict(config), tags, params=params, settings_hash=key)
    with opened as tracker:
        static_uri = None
        if config.paradigm == "naive":
            spec = dataclasses.replace(base, experts_uri=video_experts)
            state = _fit(spec, run_settings, runs, tracker)
            videos = state["synthetic"]["values"]
            labels = class_major_labels(len(dataset.classes), config.ipc)
            manifest = write_distilled(
                output.uri,
                videos,
                labels,
                classes=dataset.classes,
                dataset_uri=str(dataset.location.uri),
                method=f"{config.method}-naive",
                ipc=config.ipc,
                extra=_extra(config, preset),
            )
        else:
            image_experts = None
            if method_info(static_method).needs_experts and not config.static:
                image_experts = _experts_uri(config, layout, dataset, stage_model(STATIC))
            static_spec = dataclasses.replace(
                base, stage=STATIC, method=static_method, preset=static_preset, experts_uri=image_experts
            )
            stage1_key = _stage_key(static_spec, UNREAD_BY_STAGE1)
            static_name = f"{static_method}-spc{static_spec.per_class}-{stage1_key}-{preset.iterations}it"
            static_uri = config.static or layout.static(dataset.spec.name, static_name).uri
            if static_exists(static_uri):
                print(f"stage 1: reusing the still images at {static_uri}", flush=True)
            else:
                fit = lambda spec: _fit(spec, run_settings, runs, tracker)["synthetic"]["values"]  # noqa: E731
                fit_and_write_static(static_spec, static_uri, fit)
            _log_stills(tracker, static_uri, dataset)
            spec = dataclasses.replace(base, stage=DYNAMIC, static_uri=static_uri, experts_uri=video_experts)
            state = _fit(spec, run_settings, runs, tracker)
            extra = {**_extra(config, preset), "static_uri": static_uri}
            manifest = write_static_dynamic_state(
                output.uri, state["synthetic"], preset, dataset, method=config.method, ipc=config.ipc, extra=extra
            )
        tracker.log_metrics(
            {"storage_bytes": manifest.metadata["storage_bytes"], "storage_ratio": manifest.metadata["storage_ratio"]}
        )
        tracker.log_dict(manifest.metadata, "distilled_set.json")
        tracker.set_tags({"raydd.output": output.uri})
        _log_preview(tracker, output.uri, dataset)
        evaluation = _evaluate(config, output.uri, tracker, run_settings) if config.eval_runs else {}
    seconds = time.perf_counter() - started
    ratio = manifest.metadata["storage_ratio"]
    print(
        f"distilled {dataset.spec.name} with {config.method} {config.paradigm} at IPC {config.ipc}: "
        f"{manifest.metadata['storage_bytes'] / 1e3:.1f} kB "
        f"({ratio:.3f} x of {config.ipc} full video(s) per class) in {seconds:.0f} s -> {output.uri}"
    )
    return DistillOutcome(output.uri, manifest, static_uri, evaluation, seconds)


def _fit(spec: StageSpec, run: RunSettings, runs: Location, tracker: Tracker) -> dict[str, Any]:
    # The worker count is part of what an iteration computes (workers x samples_per_worker samples), so it
    # names the run folder too: a run with another count must not resume this one's checkpoints.
    key = settings_hash({"spec": _stage_key(spec, ("iterations",)), "workers": run.workers})
    name = f"{Path(spec.dataset_uri).name}-{spec.method}-{spec.stage}-ipc{spec.ipc}-{key}"
    print(
        f"stage {spec.stage}: {run.iterations} iterations on {run.workers} Ray Train worker(s), checkpoints in "
        f"{runs.child(name)}",
        flush=True,
    )
    address = getattr(tracker, "address", None)  # rank 0 sends the curves while the stage runs
    state = _checked(fit_stage(spec, run, runs=runs, name=name, tracking=address), spec, run)
    history = state["history"]
    # A stage resumed when it had already finished sends nothing live: the driver sends what is missing.
    sent = tracker.series_length(f"{spec.stage}/loss") if address is not None else 0
    if sent < len(history["loss"]):
        tracker.log_series(stage_curves(spec.stage, history, sent), start=sent)
    tracker.log_metrics({f"{spec.stage}/median_seconds_per_iteration": statistics.median(history["seconds"])})
    return state


def _checked(state: dict[str, Any], spec: StageSpec, run: RunSettings) -> dict[str, Any]:
    if state["iteration"] < run.iterations:
        raise RayddError(
            f"stage {spec.stage} stopped at iteration {state['iteration']} of {run.iterations}: re-run the same "
            "command to resume"
        )
    return state


def _extra(config: DistillConfig, preset: Preset) -> dict[str, Any]:
    """What the manifest carries beside the set: the settings that made it, and the lr preset its evaluation takes
    (the method's, Suppl. 11.3), so that evaluation needs only the artifact."""
    eval_preset = method_info(config.method).eval_preset
    return {"preset": preset.to_dict(), "seed": config.seed, "workers": config.workers, "eval_preset": eval_preset}


def _log_preview(tracker: Tracker, uri: str, dataset: PreparedDataset) -> None:
    distilled = load_distilled(uri)
    with tempfile.TemporaryDirectory() as folder:
        tracker.log_artifact(
            str(preview_gif(distilled.videos_NCTHW, dataset.mean, dataset.std, Path(folder) / "preview.gif"))
        )


def _log_stills(tracker: Tracker, static_uri: str, dataset: PreparedDataset) -> None:
    """``stills.png`` beside ``preview.gif``: stage 1's images, a row per class."""
    t, h, w, c = dataset.manifest.metadata["clip_shape"]
    static, _ = read_static(static_uri, num_classes=len(dataset.classes), image_shape=(c, h, w))
    with tempfile.TemporaryDirectory() as folder:
        path = stills_png(
            static, dataset.mean, dataset.std, Path(folder) / "stills.png", num_classes=len(dataset.classes)
        )
        tracker.log_artifact(str(path))


def _evaluate(config: DistillConfig, uri: str, tracker: Tracker, run: RunSettings) -> dict[str, float]:
    """Evaluation runs on GPUs when the distillation did (one GPU and a worker's CPUs each), else on 1 CPU each. Its
    MLflow run is nested under the distill run (same experiment, ``mlflow.parentRunId``)."""
    from raydd.evaluation.job import EvalConfig, evaluate

    devices = {"gpus_per_run": 1.0, "cpus_per_run": run.cpus_per_worker} if run.use_gpu else {}
    settings = EvalConfig(
        **config.unprefixed(),  # runs, epochs, model, lr_schedule: distill's --eval-* flags
        data=uri,
        store=config.store,
        seed=config.seed,
        ray_address=config.ray_address,
        experiment=config.experiment,
        **devices,
    )
    metrics = evaluate(settings, parent_run_id=getattr(tracker, "run_id", None))
    tracker.log_metrics({f"eval/{key}": value for key, value in metrics.items() if key != "protocol"})
    tracker.set_tags({"raydd.protocol": metrics["protocol"]})
    return metrics


PRESET_FIELDS = frozenset(field.name for field in DECLARED_PRESET_FIELDS)


def run_params(
    config: DistillConfig, preset: Preset, static_preset: Preset, static_method: str, borrowed: Borrowed | None
) -> dict[str, Any]:
    params: dict[str, Any] = {k: v for k, v in to_dict(config).items() if k not in PRESET_FIELDS and v is not None}
    params["preset"] = preset.to_dict()  # flattened to preset.<field>
    if config.preset_file is not None:
        params["preset_file"] = config.preset_file
    if borrowed is not None:
        params["preset"]["borrowed_from"] = borrowed.name
    if config.paradigm != "naive":
        params["stage1.method"] = static_method
        changed = {k: v for k, v in static_preset.to_dict().items() if v != getattr(preset, k)}
        params.update({f"static_preset.{k}": v for k, v in changed.items()})
    return params


def preset_flags(config: DistillConfig) -> str:
    """The preset fields the command line set (``--lr-hal 1e-3`` -> ``lr_hal``), comma-separated; ``none``."""
    return ",".join(sorted(config.overrides())) or "none"
