"""Calibration of ``--plan``'s worker memory: a worker-like process (``build_stage`` + a few
``Distiller.step`` calls, one torch thread, ray.train imported as a Ray Train worker has it) on a dataset
written in-process, its peak anonymous memory (RssAnon sampled every 2 ms) against
``plan_distill(...).worker_host_bytes``.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/plan_memory.py            # builtin + K400 shape
    PYTHONPATH=$PWD .venv/bin/python benchmarks/plan_memory.py --case k400 --clips-per-class 4

Prints one JSON line per case: predicted, measured, relative error. On this project's 2-core machine
(DM, IPC 1, 1 worker, 3 steps; k400 cases: 400 classes of 8x64x64, 4 clips a class, batch_real 2):

                   main before issue 11          main + i11-split + i11-plan
    case        predicted  measured  error      predicted  measured  error
    builtin        532 MB    526 MB   1.2 %        532 MB    526 MB   1.1 %
    builtin-sd     531 MB    536 MB   0.9 %        531 MB    539 MB   1.5 %
    k400          3741 MB   4037 MB   7.3 %       3741 MB   3567 MB   4.9 %
    k400-sd       7120 MB   7017 MB   1.5 %       7120 MB   6664 MB   6.8 %

PROCESS_BYTES was fitted on the builtin cases; the rest of the model is shapes (raydd/planning/memory.py).
The k400 cases take minutes (k400-sd 5-12 min on 2 busy cores): their 400 x 2 synthetic videos go through
MiniC3D-128 with a graph.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time

for _name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, "1")

CASES = {
    # name: (classes, frames, side, batch_real, paradigm, stage)
    "builtin": (10, 8, 32, None, "naive", "naive"),
    "builtin-sd": (10, 8, 32, None, "static-dynamic", "dynamic"),
    "k400": (400, 8, 64, 2, "naive", "naive"),
    "k400-sd": (400, 8, 64, 2, "static-dynamic", "dynamic"),
}


def rss_anon() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no RssAnon in /proc/self/status")


class PeakSampler:
    def __init__(self) -> None:
        self.peak, self._stop = rss_anon(), threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, rss_anon())

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_anon())


def write_dataset(store: str, classes: int, frames: int, side: int, clips_per_class: int) -> str:
    """A prepared dataset of random clips (shards mixing classes), written with raydd's own shard writer."""
    import numpy as np

    from raydd.data.shards import DATASET_KIND, write_clip_shard
    from raydd.data.specs import DatasetSpec
    from raydd.storage import Manifest, ShardRecord, atomic_writer, resolve, write_manifest

    spec = DatasetSpec(name="k400", layout="k400", num_frames=frames, height=side, width=side)
    folder = resolve(store).child("datasets", spec.name)
    names = [f"class{c:03d}" for c in range(classes)]
    rng = np.random.default_rng(0)
    records, counts = [], {}
    for split, per_class in (("train", clips_per_class), ("test", 1)):
        labels = np.repeat(np.arange(classes, dtype=np.int32), per_class)
        rng.shuffle(labels)
        per_shard = max(1, (64 << 20) // spec.clip_bytes)
        for number, start in enumerate(range(0, len(labels), per_shard)):
            chunk = labels[start : start + per_shard]
            frames_NTHWC = rng.integers(0, 256, (len(chunk), *spec.clip_shape), dtype=np.uint8)
            location = folder.child(f"{split}-{number:05d}.arrow")
            with atomic_writer(location) as handle:
                write_clip_shard(handle, frames_NTHWC, chunk, [f"clip{i}" for i in range(len(chunk))], [])
            records.append(ShardRecord(location.name, len(chunk), handle.bytes_written, handle.hexdigest(), split))
        counts[split] = dict(zip(names, np.bincount(labels, minlength=classes).tolist()))
    metadata = {
        "spec": spec.to_dict(),
        "classes": names,
        "clip_shape": list(spec.clip_shape),
        "clips": {s: sum(c.values()) for s, c in counts.items()},
        "class_counts": counts,
        "train_mean": [0.5, 0.5, 0.5],
        "train_std": [0.29, 0.29, 0.29],
    }
    write_manifest(folder, Manifest(kind=DATASET_KIND, shards=tuple(records), metadata=metadata))
    return folder.uri


def measure(case: str, store: str, steps: int, batch_real: int | None) -> dict[str, object]:
    """Runs in its own process: the worker's build + steps, and the plan's prediction for the same settings."""
    import ray.train  # noqa: F401 - a Ray Train worker has it imported
    import torch

    torch.set_num_threads(1)
    from raydd.distill.artifact import write_static
    from raydd.distill.loop import SingleProcess
    from raydd.distill.settings import DistillConfig
    from raydd.distill.stage_presets import resolve_presets
    from raydd.distill.stages import DYNAMIC, StageSpec, build_stage
    from raydd.planning.distill import plan_distill

    _, _, _, _, paradigm, stage = CASES[case]
    dataset = "builtin" if case.startswith("builtin") else "k400"
    config = DistillConfig(
        dataset=dataset,
        method="dm",
        paradigm=paradigm,
        ipc=1,
        store=store,
        batch_real=batch_real,
        workers=1,
        use_gpu=False,
        cpus_per_worker=1,
    )
    presets = resolve_presets(config)
    plan = plan_distill(config, presets)
    preset = presets.run
    uri = f"{store}/datasets/{dataset}"
    spec = StageSpec(stage=stage, method="dm", dataset_uri=uri, ipc=1, preset=preset)
    if stage == DYNAMIC:
        from raydd.classes import class_major_labels
        from raydd.data.reader import open_prepared

        opened = open_prepared(uri)
        t, h, w, c = opened.manifest.metadata["clip_shape"]
        classes = len(opened.classes)
        per = preset.static_per_ipc
        static_uri = f"{store}/static"
        write_static(
            static_uri,
            torch.randn(classes * per, c, h, w),
            class_major_labels(classes, per),
            {"dataset_uri": uri},
        )
        import dataclasses

        spec = dataclasses.replace(spec, static_uri=static_uri)
    with PeakSampler() as sampler:
        distiller = build_stage(spec, SingleProcess(), torch.device("cpu"))
        for iteration in range(steps):
            distiller.step(iteration)
    predicted = plan.stage_memory[stage].host_bytes
    return {
        "case": case,
        "predicted": predicted,
        "measured": sampler.peak,
        "error": abs(predicted - sampler.peak) / sampler.peak,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--case", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--clips-per-class", type=int, default=4)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--inner", nargs=2, metavar=("CASE", "STORE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inner:
        case, store = args.inner
        print(json.dumps(measure(case, store, args.steps, CASES[case][3])), flush=True)
        return
    for case in args.case:
        classes, frames, side, _, _, _ = CASES[case]
        with tempfile.TemporaryDirectory() as store:
            if case.startswith("builtin"):
                from raydd.data.ingest import assemble_manifest, plan_shards, write_shard
                from raydd.data.layouts import index_source
                from raydd.prepare import PrepareConfig
                from raydd.storage import resolve, write_manifest

                spec = PrepareConfig(store=store).spec()
                target = resolve(store).child("datasets", spec.name)
                index = index_source(spec, None)
                results = [
                    write_shard(spec, plan, target.uri, None, len(index.classes))
                    for plan in plan_shards(spec, index, 256.0)
                ]
                write_manifest(target, assemble_manifest(spec, index, results, 0.0))
            else:
                write_dataset(store, classes, frames, side, args.clips_per_class)
            started = time.perf_counter()
            out = subprocess.run(
                [sys.executable, __file__, "--inner", case, store, "--steps", str(args.steps)],
                capture_output=True,
                text=True,
            )
            if out.returncode:
                sys.exit(out.stderr[-3000:])
            result = json.loads(out.stdout.strip().splitlines()[-1])
            print(json.dumps({**result, "seconds": round(time.perf_counter() - started, 1)}), flush=True)


if __name__ == "__main__":
    main()
