"""Benchmark loader (issue 26, item 4): does the host gather a K400 iteration's real batch fast enough for a GPU?

    .venv/bin/python benchmarks/loader.py                 # ~1-2 min on 2 cores (first run writes the dataset)
    .venv/bin/python benchmarks/loader.py --compute-s 0.3 # another simulated compute time per iteration

Input: a Kinetics-400-shaped dataset (400 classes, 8x64x64x3 uint8, random, seeded) written by benchmarks/scale.py's
``write_k400_like`` with ``--clips`` a class (default 16: ~0.6 GB; the batch draws with replacement where a class has
fewer than 64), memory-mapped from local disk and warmed into the page cache by one untimed iteration.

One iteration's real batch is DM's at the K400 preset: 64 clips of each of the 400 classes, 25,600 clips, 2.5 GB,
drawn by ``RealData.draw_per_class`` and gathered by ``RealData.staged`` (the host half of the distillation's
loader) in DM's 256-clip chunks into its two staging buffers, pinned where this torch can pin (a CUDA build with a
GPU present), else plain memory, which the table says.

gather     GB/s of the gather alone (best of 3 iterations; the next chunk is asked for once this one is done) against
           this machine's plain memcpy (numpy copyto of a 256 MB buffer, best of 5) in the same run. Target >= 50 %.
prefetch   The same batch with a simulated compute of ``--compute-s`` per iteration, spread evenly over its chunks
           (a sleep, which frees the CPU as a GPU's compute would): per chunk, how long before the consumer asks for
           it the background thread had it ready (lead), the consumer's total wait, and how long before the current
           chunk's compute ends the next chunk is ready. The prefetch runs within a sample's draw (the draw is made
           first, from the sample's generator, so the sampling order is unchanged): an iteration's first chunk is
           not prefetched during the previous iteration.

Prints a table and writes benchmarks/results/loader.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.scale import write_k400_like  # noqa: E402
from raydd.data.reader import open_prepared  # noqa: E402
from raydd.distill.real import RealData  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
PER_CLASS, CHUNK = 64, 256  # DM's batch_real at the K400 preset (Suppl. Tab. 11) and REAL_CHUNK
TARGET = 0.5  # gather GB/s / memcpy GB/s


def memcpy_gbps(nbytes: int = 256 << 20, repeats: int = 5) -> float:
    source = np.random.default_rng(0).integers(0, 256, nbytes, dtype=np.uint8)
    target = np.empty_like(source)
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        np.copyto(target, source)
        best = min(best, time.perf_counter() - started)
    return nbytes / best / 1e9


def can_pin() -> bool:
    try:
        torch.empty(1, pin_memory=True)
    except RuntimeError:
        return False
    return True


def gather(real: RealData, chunks: list, compute_s: float) -> dict[str, float]:
    """One iteration through ``real.staged``: seconds, per-chunk lead and the consumer's wait."""
    per_chunk = compute_s / len(chunks)
    leads, waited = [], 0.0
    original = real._stage
    ready: dict[int, float] = {}

    def timed(draw, buffer):  # noqa: ANN001, ANN202 - record when the background thread finished each chunk
        out = original(draw, buffer)
        ready[len(ready)] = time.perf_counter()
        return out

    real._stage = timed  # type: ignore[method-assign]
    started = time.perf_counter()
    try:
        staged = real.staged(chunks)
        for k in range(len(chunks)):
            asked = time.perf_counter()
            next(staged)
            got = time.perf_counter()
            waited += got - asked
            leads.append(asked - ready[k])
            if per_chunk:
                time.sleep(per_chunk)
        staged.close()
    finally:
        real._stage = original  # type: ignore[method-assign]
    return {"seconds": time.perf_counter() - started, "waited_s": waited, "leads": leads}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clips", type=int, default=16, help="train clips a class in the written dataset")
    parser.add_argument("--compute-s", type=float, default=0.4, help="simulated compute seconds per iteration")
    parser.add_argument("--store", default=str(Path(tempfile.gettempdir()) / "raydd-loader-bench"))
    args = parser.parse_args()

    dataset = open_prepared(write_k400_like(args.store, args.clips))
    pin = can_pin()
    train = dataset.split("train")
    real = RealData(train, dataset.mean, dataset.std, torch.device("cpu"), frames=False, pin_memory=pin)
    draws = [real.draw_per_class(PER_CLASS, torch.Generator().manual_seed(seed)).chunks(CHUNK) for seed in range(5)]
    nbytes = sum(len(c) for c in draws[0]) * int(np.prod(real.videos.clip_shape))
    gather(real, draws[0], 0.0)  # warm the page cache and the buffers
    memcpy = memcpy_gbps()
    alone = min((gather(real, draw, 0.0) for draw in draws[1:4]), key=lambda timed: timed["seconds"])  # as memcpy
    overlapped = gather(real, draws[4], args.compute_s)
    gbps = nbytes / alone["seconds"] / 1e9
    leads = overlapped["leads"][1:]  # the first chunk of an iteration is asked for as soon as it is drawn
    results = {
        "machine": platform.node(),
        "torch": torch.__version__,
        "pinned": pin,
        "clips": sum(len(c) for c in draws[0]),
        "batch_gb": nbytes / 1e9,
        "chunk_clips": CHUNK,
        "memcpy_gbps": memcpy,
        "gather_gbps": gbps,
        "gather_over_memcpy": gbps / memcpy,
        "target_gather_over_memcpy": TARGET,
        "gather_seconds": alone["seconds"],
        "compute_s_per_iteration": args.compute_s,
        "iteration_seconds_with_compute": overlapped["seconds"],
        "consumer_wait_s": overlapped["waited_s"],
        "median_chunk_lead_s": statistics.median(leads),
        "min_chunk_lead_s": min(leads),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "loader.json").write_text(json.dumps(results, indent=2) + "\n")
    memory = "pinned" if pin else "plain memory (this torch cannot pin: no CUDA device)"
    print(f"K400 iteration: {results['clips']} clips of 8x64x64x3 uint8, {nbytes / 1e9:.2f} GB, into {memory}")
    rows = [
        ("memcpy GB/s (numpy copyto, 256 MB)", f"{memcpy:.2f}", ""),
        ("gather GB/s", f"{gbps:.2f}", ""),
        ("gather / memcpy", f"{gbps / memcpy:.2f}", f">= {TARGET}"),
        ("gather s / iteration", f"{alone['seconds']:.2f}", ""),
        (f"iteration s with {args.compute_s} s compute", f"{overlapped['seconds']:.2f}", ""),
        ("consumer wait s / iteration", f"{overlapped['waited_s']:.3f}", ""),
        ("median chunk lead s", f"{results['median_chunk_lead_s']:.4f}", "> 0"),
        ("min chunk lead s", f"{results['min_chunk_lead_s']:.4f}", "> 0"),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"{'measure':<{width}}  {'value':>8}  target")
    for name, value, target in rows:
        print(f"{name:<{width}}  {value:>8}  {target}")


if __name__ == "__main__":
    main()
