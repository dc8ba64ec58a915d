"""Step time of the contrastive strategies against plain cross teaching, same members and batch.

    .venv/bin/python benchmarks/contrastive_overhead.py --steps 6 --patch 128 --batch 8

Each variant trains the same two members (U-Net + Swin-UNet, CPU sizes) on batches drawn from a
4-class phantom (half annotated, half unannotated, with registered labels standing in for the
registration pseudo-labels, so REPS has something to bank and the registration term something to
learn). Variants: cross teaching, plus MCSC, MCSCv2 or REPS alone, plus the registration term
alone, and the whole CCT-R preset (registration term + REPS). They are timed in interleaved rounds
(A, B, C, ... then again) so a load change on a shared machine hits them alike; the median step
time per variant is reported with its overhead over cross teaching. Results go to
resources/benchmarks/contrastive_overhead.json and .md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from napari_semiseg.core.annotations import IGNORE  # noqa: E402
from napari_semiseg.core.atomic import write_text_atomic  # noqa: E402
from napari_semiseg.core.config import TrainConfig  # noqa: E402
from napari_semiseg.core.device import set_threads  # noqa: E402
from napari_semiseg.core.engine.composition import build_terms  # noqa: E402
from napari_semiseg.core.engine.data import BatchSampler, build_training_slices  # noqa: E402
from napari_semiseg.core.engine.loop import _optimizer, _Run  # noqa: E402
from napari_semiseg.core.engine.members import build_members  # noqa: E402
from napari_semiseg.core.engine.presets import PRESETS, StrategyPreset, TermSpec  # noqa: E402
from napari_semiseg.core.engine.terms import TermContext  # noqa: E402

RESULTS = ROOT / "resources" / "benchmarks"
CLASSES = 4


def variants() -> dict[str, StrategyPreset]:
    base = PRESETS["cross_teaching"]

    def with_term(name: str, kind: str) -> StrategyPreset:
        return StrategyPreset(name, "", base.members, (*base.terms, TermSpec(kind, weight=1e-3)))

    registration = StrategyPreset("registration", "", base.members, (*base.terms, TermSpec("registration", weight=0.5)))
    return {
        "cross_teaching": base,
        "mcsc": with_term("mcsc", "mcsc_contrastive"),
        "mcsc_v2": with_term("mcsc_v2", "certainty_contrastive"),
        "reps": with_term("reps", "reps_contrastive"),
        "registration": registration,  # cross teaching + registration supervision: CCT-R without REPS
        "cct_r": PRESETS["cct_r"],
    }


def phantom_slices(patch: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    size = patch + patch // 4
    yy, xx = np.mgrid[:size, :size]
    images, labels = [], []
    for _ in range(24):
        cy, cx = rng.uniform(0.35, 0.65, 2) * size
        radius = np.hypot(yy - cy, xx - cx)
        label = (CLASSES - 1 - np.digitize(radius, [size * 0.12, size * 0.2, size * 0.3])).clip(0)
        image = label * 0.7 + rng.normal(0, 0.4, label.shape)
        images.append(image.astype(np.float32))
        labels.append(label.astype(np.int64))
    volume = np.stack(images)
    targets = np.stack(labels)
    sparse = np.full_like(targets, IGNORE)
    sparse[::6] = targets[::6]

    class Registered:
        def __init__(self, targets):
            self.targets = targets
            self.weights = np.ones(targets.shape, np.float32)

    return build_training_slices([volume], [sparse], axis=0, seed=seed, pseudo_labels=[Registered(targets)])


def make_run(preset: StrategyPreset, slices, config: TrainConfig) -> _Run:
    device = torch.device("cpu")
    members = build_members(preset, CLASSES, "cpu", device, config.seed)
    context = TermContext(CLASSES, 0.0, "cpu", sum(slices.counts))
    terms = build_terms(preset, context, members, device)
    optimizer = _optimizer(members, terms)
    return _Run(None, config, preset, members, optimizer, tuple(range(CLASSES)), device, Path("."), terms)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6, help="timed steps per variant and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--patch", type=int, default=128)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()
    set_threads(args.threads)
    torch.manual_seed(0)
    slices = phantom_slices(args.patch)
    config = TrainConfig(strategy="cross_teaching", iterations=1000, batch_size=args.batch, patch_size=args.patch)
    runs = {name: make_run(preset, slices, config) for name, preset in variants().items()}
    sampler = BatchSampler(slices, args.patch, args.batch, True, True, seed=0)
    batches = [sampler.sample() for _ in range(args.steps)]
    for run in runs.values():  # warm-up: allocator, banks filled once
        run.step(batches[0], 0.5)
        run.step(batches[1 % len(batches)], 0.5)
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.rounds):
        for name, run in runs.items():
            for batch in batches:
                started = time.perf_counter()
                run.step(batch, 0.5)
                times[name].append(time.perf_counter() - started)
    base = statistics.median(times["cross_teaching"])
    with_registration = statistics.median(times["registration"])
    rows = [{"variant": name, "median_step_s": statistics.median(t), "overhead": statistics.median(t) / base - 1.0,
             "overhead_vs_registration": (statistics.median(t) / with_registration - 1.0) if name == "cct_r" else None}
            for name, t in times.items()]
    settings = {"patch": args.patch, "batch": args.batch, "steps": args.steps, "rounds": args.rounds,
                "threads": torch.get_num_threads(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    RESULTS.mkdir(parents=True, exist_ok=True)
    write_text_atomic(RESULTS / "contrastive_overhead.json", json.dumps({"settings": settings, "rows": rows}, indent=2))
    lines = [f"Step time vs plain cross teaching ({args.patch}², batch {args.batch}, {settings['threads']} threads, "
             f"{settings['date']}; `benchmarks/contrastive_overhead.py`)", "",
             "| variant | median step (s) | overhead |", "|---|---|---|"]
    lines += [f"| {r['variant']} | {r['median_step_s']:.3f} | {100 * r['overhead']:+.0f} % |" for r in rows]
    cct_r = next(r for r in rows if r["variant"] == "cct_r")
    lines += ["", "`registration` is cross teaching plus the registration supervision term (CCT-R without REPS); "
              f"CCT-R's REPS term costs {100 * cct_r['overhead_vs_registration']:+.0f} % on top of it."]
    write_text_atomic(RESULTS / "contrastive_overhead.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
