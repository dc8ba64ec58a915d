"""How far seed noise moves "strategy minus supervised-only" on the phantoms of the strategy tests.

The strategy tests (tests/core/test_strategies.py, tests/core/test_boundary_strategies.py) train
each strategy for 40 or 60 steps on a ring phantom. Whether a strategy beats supervised-only there
is decided by the seed and by which vector kernels the CPU runs, so the tests check mechanisms and
an absolute floor; this benchmark measures the spread that sets that floor, and the mean
difference over seeds, under the kernels torch runs now (``ATEN_CPU_CAPABILITY=avx2`` or
``default`` on an AVX-512 machine selects the others for torch's own kernels, and
``ONEDNN_MAX_CPU_ISA=AVX2`` for the convolutions, which oneDNN runs with kernels it picks itself).

    python benchmarks/phantom_seed_spread.py --seeds 0 1 2 3 4 5
    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 python benchmarks/phantom_seed_spread.py --seeds 0 1 2 3 4 5

Writes resources/benchmarks/phantom_seed_spread.json (resumable, one row per setup, strategy,
seed and kernel set) and phantom_seed_spread.md.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from protocol_common import RESULTS, ResultFile  # noqa: E402

from napari_semiseg.core.atomic import write_text_atomic  # noqa: E402


@dataclass(frozen=True)
class PhantomSetup:
    """One phantom run of the strategy tests: the phantom, the painted slices and the step budget."""

    name: str
    phantom_seed: int
    iterations: int
    strategies: tuple[str, ...]
    shape: tuple[int, int, int] = (12, 48, 48)
    painted: tuple[int, ...] = (2, 6, 9)


TEACHER_SETUP = PhantomSetup("teacher_40", phantom_seed=2, iterations=40,
                             strategies=("supervised", "mean_teacher", "mcsc", "mcsc_v2", "cct_r"))
BOUNDARY_SETUP = PhantomSetup("boundary_60", phantom_seed=1, iterations=60,
                              strategies=("supervised", "boclis", "bfa", "pmcm"))
SETUPS = (TEACHER_SETUP, BOUNDARY_SETUP)


def _dice(prediction: np.ndarray, truth: np.ndarray, label: int) -> float:
    a, b = prediction == label, truth == label
    return 2 * float((a & b).sum()) / max(float(a.sum() + b.sum()), 1.0)


def train_on_phantom(setup: PhantomSetup, strategy: str, out_dir: Path, seed: int = 0) -> tuple[list, float]:
    """Train ``strategy`` on the setup's phantom (one thread, an event per step); returns the
    events and the mean foreground Dice of the prediction on the unpainted slices."""
    from napari_semiseg.core.annotations import AnnotationScheme
    from napari_semiseg.core.config import TrainConfig
    from napari_semiseg.core.engine import TrainingData, loop, train
    from napari_semiseg.core.model import load_model
    from napari_semiseg.core.phantoms import paint_slices, ring_phantom
    from napari_semiseg.core.predict import predict_volume

    volume, truth = ring_phantom(setup.shape, seed=setup.phantom_seed)
    data = TrainingData([volume], [paint_slices(truth, list(setup.painted))], AnnotationScheme())
    config = TrainConfig(strategy=strategy, iterations=setup.iterations, batch_size=4, patch_size=48,
                         seed=seed, device="cpu", threads=1)
    every_step, loop.STEP_EVENT_SECONDS = loop.STEP_EVENT_SECONDS, 0.0  # an event per step: the loss curve
    try:
        events = list(train(data, config, out_dir))
    finally:
        loop.STEP_EVENT_SECONDS = every_step
    prediction = predict_volume(load_model(out_dir, device="cpu"), volume).labels
    unpainted = [i for i in range(setup.shape[0]) if i not in setup.painted]
    dice = float(np.mean([_dice(prediction[unpainted], truth[unpainted], c) for c in (1, 2)]))
    return events, dice


def kernels() -> str:
    """The vector kernels in use: torch's own (``ATEN_CPU_CAPABILITY``) and, when capped, oneDNN's
    (``ONEDNN_MAX_CPU_ISA``: convolutions run in oneDNN, which picks its kernels by itself)."""
    import os

    import torch

    onednn = os.environ.get("ONEDNN_MAX_CPU_ISA")
    return torch.backends.cpu.get_cpu_capability() + (f"+oneDNN {onednn.upper()}" if onednn else "")


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def summary_table(rows: list[dict]) -> str:
    """Markdown: per setup, strategy and kernel set, the Dice over seeds and the difference from
    supervised-only on the same seed (mean, min, max)."""
    lines = ["| setup | kernels | strategy | seeds | Dice mean (min to max) | minus supervised: mean (min to max) |",
             "|---|---|---|---|---|---|"]
    by_key = {(r["setup"], r["kernels"], r["strategy"], r["seed"]): r["dice"] for r in rows}
    for setup, kernel_set, strategy in sorted({(r["setup"], r["kernels"], r["strategy"]) for r in rows}):
        seeds = sorted(s for (a, k, st, s) in by_key if (a, k, st) == (setup, kernel_set, strategy))
        dice = [by_key[setup, kernel_set, strategy, s] for s in seeds]
        paired = [by_key[setup, kernel_set, strategy, s] - by_key[setup, kernel_set, "supervised", s]
                  for s in seeds if (setup, kernel_set, "supervised", s) in by_key]
        gap = "" if strategy == "supervised" or not paired else (
            f"{statistics.mean(paired):+.3f} ({min(paired):+.3f} to {max(paired):+.3f})")
        lines.append(f"| {setup} | {kernel_set} | {strategy} | {len(seeds)} | "
                     f"{statistics.mean(dice):.3f} ({min(dice):.3f} to {max(dice):.3f}) | {gap} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--name", default="phantom_seed_spread")
    parser.add_argument("--redo", action="store_true")
    args = parser.parse_args(argv)

    results = ResultFile(RESULTS / f"{args.name}.json", ("setup", "strategy", "seed", "kernels"))
    meta = {"cpu": _cpu_model(), "benchmark": "benchmarks/phantom_seed_spread.py"}
    for setup in SETUPS:
        for seed in args.seeds:
            for strategy in setup.strategies:
                key = {"setup": setup.name, "strategy": strategy, "seed": seed, "kernels": kernels()}
                if results.has(**key) and not args.redo:
                    continue
                started = time.perf_counter()
                with tempfile.TemporaryDirectory() as workdir:
                    _, dice = train_on_phantom(setup, strategy, Path(workdir), seed)
                row = {**key, "dice": round(dice, 4), "seconds": round(time.perf_counter() - started, 1),
                       "cpu": meta["cpu"]}
                results.add(row, meta)
                print(f"{setup.name} {strategy} seed {seed} [{key['kernels']}]: Dice {dice:.3f}", flush=True)
    table = summary_table(results.rows)
    write_text_atomic(RESULTS / f"{args.name}.md",
                      f"Phantom seed spread ({meta['cpu']}; `benchmarks/phantom_seed_spread.py`)\n\n{table}")
    print(table)


if __name__ == "__main__":
    main()
