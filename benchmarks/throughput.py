"""Training-step throughput of every strategy preset, against an SSL4MIS-style CTS step.

    .venv/bin/python benchmarks/throughput.py [--strategies a b] [--steps 4] [--sizes cpu paper224]

For each preset in ``core.engine.presets.PRESETS`` and each setting, times the real
training step (the engine's ``BatchSampler.sample`` plus ``_Run.step``: augmentation,
forward, losses, backward, optimiser) on synthetic phantoms:

- ``cpu``: the default CPU settings (128² crops, batch 8, ``cpu`` network sizes);
- ``paper224``: 224², batch 8 (4 annotated + 4 not when the strategy uses unannotated
  slices), ``paper`` network sizes.

FLOPs of one step are counted with ``torch.utils.flop_counter.FlopCounterMode`` (forward
and backward) and reported as achieved GFLOP/s and as a fraction of the dense fp32
matrix-multiply peak measured in the same run.

The reference is what SSL4MIS's cross-teaching script computes, implemented plainly: the
same two paper-size networks (U-Net and Swin-UNet) in fp32 NCHW, SGD, default torch
threads and allocator, a per-sample Python augmentation loop like SSL4MIS's
``RandomGenerator`` (scipy rotations, flips, zoom to 224²) and SSL4MIS's per-class Dice
loss. It runs in its own process (so it keeps glibc's default allocator settings), and its
steps are interleaved with ours (A/B/A/B) for the speed-up, since other work on the
machine changes timings from minute to minute.

Results go to resources/benchmarks/throughput.json and .md.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

RESULTS = ROOT / "resources" / "benchmarks"
SETTINGS = {
    "cpu": {"patch_size": 128, "batch_size": 8, "network_size": "cpu"},
    "paper224": {"patch_size": 224, "batch_size": 8, "network_size": "paper"},
}
SLICE_SHAPE = (256, 216)  # an ACDC-like short-axis slice, cropped (ours) or zoomed (SSL4MIS) to 224²
NUM_CLASSES = 3
REFERENCE_STRATEGY = "cross_teaching"


# --------------------------------------------------------------------------- data

def phantom_volumes(seed: int = 0):
    """Two painted and two unannotated phantom volumes of ACDC-like slice size."""
    from napari_semiseg.core.phantoms import paint_slices, ring_phantom

    volumes, labels, truths = [], [], []
    for index in range(4):
        volume, truth = ring_phantom((10, *SLICE_SHAPE), seed=seed + index)
        volumes.append(volume)
        truths.append(truth)
        labels.append(paint_slices(truth, [2, 5, 8]) if index < 2 else None)
    return volumes, labels, truths


def synthetic_pseudo_labels(truths, labels):
    """Registration pseudo-labels stand-ins (the truth, quality 0.8) so the step can be timed
    without running registration first; the step costs the same whatever their values."""
    from napari_semiseg.core.engine.pseudo_labels import PseudoLabels

    return [
        PseudoLabels(truth.astype(np.int64), np.full(truth.shape, 0.8, np.float32)) if label is None else None
        for truth, label in zip(truths, labels)
    ]


# --------------------------------------------------------------------------- our step

def build_engine_step(strategy: str, setting: str, threads: int = 0, seed: int = 0):
    """The engine's sampler and step for one preset; returns ``step(progress) -> losses``."""
    from napari_semiseg.core.annotations import AnnotationMode, AnnotationScheme
    from napari_semiseg.core.config import TrainConfig
    from napari_semiseg.core.device import set_threads, tune_cpu_allocator
    from napari_semiseg.core.engine import loop
    from napari_semiseg.core.engine.data import BatchSampler, TrainingData
    from napari_semiseg.core.engine.members import build_members
    from napari_semiseg.core.engine.presets import get_preset

    tune_cpu_allocator()
    set_threads(threads)
    volumes, labels, truths = phantom_volumes(seed)
    data = TrainingData(volumes, labels, AnnotationScheme(AnnotationMode.SLICES, 0))
    config = TrainConfig(strategy=strategy, iterations=10_000, device="cpu", seed=seed, threads=threads,
                         **SETTINGS[setting])
    label_values = data.check()
    preset = get_preset(strategy)
    uses_registration = any(term.kind == "registration" for term in preset.terms)
    pseudo = synthetic_pseudo_labels(truths, labels) if uses_registration else None
    slices = loop._training_slices(data, label_values, seed, pseudo)
    device = torch.device("cpu")
    members = build_members(preset, len(label_values), config.network_size, device, seed)
    optimizer = loop._optimizer(members)
    sampler = BatchSampler(slices, config.patch_size, config.batch_size, preset.uses_unannotated, config.augment, seed)
    run = loop._Run(data, config, preset, members, optimizer, label_values, device, Path(tempfile.mkdtemp()))

    def step(progress: float) -> dict:
        return run.step(sampler.sample(), progress)

    step.annotated = sampler.annotated_per_batch
    step.batch_size = config.batch_size
    step.parameters = sum(p.numel() for m in members for p in m.network.parameters())
    return step


# --------------------------------------------------------------------------- SSL4MIS-style reference

class SSL4MISRandomGenerator:
    """Per-sample augmentation as in SSL4MIS ``dataloaders/dataset.py`` (``RandomGenerator``)."""

    def __init__(self, output_size, rng: np.random.Generator):
        self.output_size = output_size
        self.rng = rng

    def __call__(self, image: np.ndarray, label: np.ndarray):
        from scipy import ndimage

        if self.rng.random() > 0.5:
            k = int(self.rng.integers(0, 4))
            image, label = np.rot90(image, k), np.rot90(label, k)
            axis = int(self.rng.integers(0, 2))
            image, label = np.flip(image, axis=axis).copy(), np.flip(label, axis=axis).copy()
        elif self.rng.random() > 0.5:
            angle = int(self.rng.integers(-20, 20))
            image = ndimage.rotate(image, angle, order=0, reshape=False)
            label = ndimage.rotate(label, angle, order=0, reshape=False)
        x, y = image.shape
        zoom = (self.output_size[0] / x, self.output_size[1] / y)
        image = ndimage.zoom(image, zoom, order=0)
        label = ndimage.zoom(label, zoom, order=0)
        return torch.from_numpy(image.astype(np.float32)).unsqueeze(0), torch.from_numpy(label.astype(np.uint8))


class SSL4MISDiceLoss(torch.nn.Module):
    """SSL4MIS ``utils/losses.py`` ``DiceLoss``: one-hot by a loop over classes, Dice per class."""

    def __init__(self, n_classes: int):
        super().__init__()
        self.n_classes = n_classes

    def _one_hot_encoder(self, input_tensor):
        return torch.cat([input_tensor == i for i in range(self.n_classes)], dim=1).float()

    @staticmethod
    def _dice_loss(score, target):
        smooth = 1e-5
        intersect = torch.sum(score * target)
        y_sum = torch.sum(target * target)
        z_sum = torch.sum(score * score)
        return 1 - (2 * intersect + smooth) / (z_sum + y_sum + smooth)

    def forward(self, inputs, target):
        target = self._one_hot_encoder(target)
        loss = 0.0
        for i in range(self.n_classes):
            loss += self._dice_loss(inputs[:, i], target[:, i])
        return loss / self.n_classes


def build_reference_step(seed: int = 0, labeled_bs: int = 4, batch_size: int = 8, size: int = 224):
    """SSL4MIS ``train_cross_teaching_between_cnn_transformer_2D.py``'s iteration, plainly."""
    from napari_semiseg.core.networks import build_network

    volumes, _, truths = phantom_volumes(seed)
    images = [np.asarray(s, np.float32) for v in volumes for s in v.array]
    labels = [np.asarray(s) for t in truths for s in t]
    rng = np.random.default_rng(seed)
    augment = SSL4MISRandomGenerator((size, size), rng)
    torch.manual_seed(seed)
    model1 = build_network("unet", 1, NUM_CLASSES, "paper")
    model2 = build_network("swin_unet", 1, NUM_CLASSES, "paper")
    optimizer1 = torch.optim.SGD(model1.parameters(), lr=0.01, momentum=0.9, weight_decay=0.0001)
    optimizer2 = torch.optim.SGD(model2.parameters(), lr=0.01, momentum=0.9, weight_decay=0.0001)
    ce_loss = torch.nn.CrossEntropyLoss()
    dice_loss = SSL4MISDiceLoss(NUM_CLASSES)
    model1.train()
    model2.train()

    def step(progress: float) -> dict:
        chosen = rng.integers(0, len(images), batch_size)
        samples = [augment(images[i], labels[i]) for i in chosen]
        volume_batch = torch.stack([s[0] for s in samples])
        label_batch = torch.stack([s[1] for s in samples])
        outputs1 = model1(volume_batch)
        outputs_soft1 = torch.softmax(outputs1, dim=1)
        outputs2 = model2(volume_batch)
        outputs_soft2 = torch.softmax(outputs2, dim=1)
        consistency_weight = 0.1
        loss1 = 0.5 * (ce_loss(outputs1[:labeled_bs], label_batch[:labeled_bs].long())
                       + dice_loss(outputs_soft1[:labeled_bs], label_batch[:labeled_bs].unsqueeze(1)))
        loss2 = 0.5 * (ce_loss(outputs2[:labeled_bs], label_batch[:labeled_bs].long())
                       + dice_loss(outputs_soft2[:labeled_bs], label_batch[:labeled_bs].unsqueeze(1)))
        pseudo_outputs1 = torch.argmax(outputs_soft1[labeled_bs:].detach(), dim=1, keepdim=False)
        pseudo_outputs2 = torch.argmax(outputs_soft2[labeled_bs:].detach(), dim=1, keepdim=False)
        pseudo_supervision1 = dice_loss(outputs_soft1[labeled_bs:], pseudo_outputs2.unsqueeze(1))
        pseudo_supervision2 = dice_loss(outputs_soft2[labeled_bs:], pseudo_outputs1.unsqueeze(1))
        loss = loss1 + consistency_weight * pseudo_supervision1 + loss2 + consistency_weight * pseudo_supervision2
        optimizer1.zero_grad()
        optimizer2.zero_grad()
        loss.backward()
        optimizer1.step()
        optimizer2.step()
        lr = 0.01 * (1.0 - progress) ** 0.9
        for group in optimizer1.param_groups + optimizer2.param_groups:
            group["lr"] = lr
        return {"total": float(loss.detach())}

    step.annotated = labeled_bs
    step.batch_size = batch_size
    step.parameters = sum(p.numel() for m in (model1, model2) for p in m.parameters())
    return step


def _reference_worker(connection) -> None:
    """Runs reference steps on request, in a fresh process with torch's and glibc's defaults."""
    step = build_reference_step()
    connection.send(("ready", step.parameters))
    while True:
        command = connection.recv()
        if command == "quit":
            break
        if command == "flops":
            connection.send(count_flops(step))
            continue
        started, started_cpu = time.perf_counter(), time.process_time()
        step(0.0)
        connection.send((time.perf_counter() - started, time.process_time() - started_cpu))


# --------------------------------------------------------------------------- measuring

def matmul_peak_gflops(n: int = 2048, repeats: int = 8) -> float:
    """Best dense fp32 matrix-multiply rate (GFLOP/s) with the current torch threads."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - started)
    return 2 * n**3 / best / 1e9


def count_flops(step) -> float:
    counter = FlopCounterMode(display=False)
    with counter:
        step(0.0)
    return float(counter.get_total_flops())


def timed(step, progress: float) -> tuple[float, float]:
    """Wall-clock and process CPU seconds of one step."""
    started, started_cpu = time.perf_counter(), time.process_time()
    step(progress)
    return time.perf_counter() - started, time.process_time() - started_cpu


def time_steps(step, steps: int, warmup: int = 1) -> list[tuple[float, float]]:
    for _ in range(warmup):
        step(0.0)
    return [timed(step, index / max(steps, 1) * 0.5) for index in range(steps)]


def summarise(name: str, setting: str, step, measured: list[tuple[float, float]], flops: float, peak: float) -> dict:
    times = [wall for wall, _ in measured]
    seconds = statistics.median(times)
    return {
        "cpu_seconds_per_step": round(statistics.median(cpu for _, cpu in measured), 4),
        "strategy": name, "setting": setting, "batch_size": step.batch_size, "annotated": step.annotated,
        "parameters": step.parameters, "steps": len(times), "seconds_per_step": round(seconds, 4),
        "seconds_all": [round(t, 4) for t in times], "images_per_second": round(step.batch_size / seconds, 2),
        "gflop_per_step": round(flops / 1e9, 2), "gflops": round(flops / seconds / 1e9, 2),
        "fraction_of_peak": round(flops / seconds / 1e9 / peak, 3),
    }


def compare_with_reference(steps: int, peak: float) -> dict:
    """Our cross-teaching step at 224² against the reference, interleaved step by step."""
    context = mp.get_context("spawn")
    ours_end, reference_end = context.Pipe()
    worker = context.Process(target=_reference_worker, args=(reference_end,), daemon=True)
    worker.start()
    _, reference_parameters = ours_end.recv()
    ours = build_engine_step(REFERENCE_STRATEGY, "paper224")
    ours(0.0)
    ours_end.send("step")
    ours_end.recv()  # warm-up of both
    ours_times, reference_times = [], []
    for index in range(steps):
        ours_end.send("step")
        reference_times.append(ours_end.recv())
        ours_times.append(timed(ours, index / steps * 0.5))
    ours_end.send("flops")
    reference_flops = ours_end.recv()
    ours_end.send("quit")
    worker.join(timeout=30)
    ours_flops = count_flops(ours)
    reference = summarise("ssl4mis_style_cts", "paper224", _Shape(8, 4, reference_parameters), reference_times,
                          reference_flops, peak)
    engine = summarise(REFERENCE_STRATEGY, "paper224", ours, ours_times, ours_flops, peak)
    return {"reference": reference, "ours": engine,
            "speedup": round(reference["seconds_per_step"] / engine["seconds_per_step"], 2),
            "cpu_speedup": round(reference["cpu_seconds_per_step"] / engine["cpu_seconds_per_step"], 2)}


class _Shape:
    def __init__(self, batch_size: int, annotated: int, parameters: int):
        self.batch_size, self.annotated, self.parameters = batch_size, annotated, parameters


def processor_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


# --------------------------------------------------------------------------- report

def markdown(result: dict) -> str:
    lines = [
        "# Training-step throughput",
        "",
        f"`python benchmarks/throughput.py` on {result['machine']['processor']} "
        f"({result['machine']['cores']} cores, torch {result['machine']['torch']}, "
        f"CPU capability {result['machine']['cpu_capability']}, {result['machine']['threads']} threads). "
        f"Dense fp32 matmul peak measured in this run: **{result['peak_gflops']:.0f} GFLOP/s**. "
        f"Load average before/after: {result['load_before']} / {result['load_after']}"
        + (" (other work was running: treat figures as ±20 %)." if result["load_before"] and result["load_before"][0] > 0.5
           else "."),
        "",
        "Settings: `cpu` = 128² crops, batch 8, `cpu` network sizes (the defaults); "
        "`paper224` = 224², batch 8 (4 annotated + 4 not for semi-supervised strategies), `paper` sizes. "
        "A step = sampling with augmentation + forward + losses + backward + optimiser. Median of the timed steps. "
        "CPU s/step = the process's CPU time per step (both threads, including OpenMP spin-waits): "
        "less disturbed than wall time when other processes share the cores.",
        "",
        "| strategy | setting | params (M) | s/step | images/s | GFLOP/step | GFLOP/s | of peak | CPU s/step |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        lines.append(
            f"| {row['strategy']} | {row['setting']} | {row['parameters'] / 1e6:.1f} | {row['seconds_per_step']:.3f} | "
            f"{row['images_per_second']:.1f} | {row['gflop_per_step']:.1f} | {row['gflops']:.1f} | "
            f"{row['fraction_of_peak']:.0%} | {row['cpu_seconds_per_step']:.2f} |"
        )
    comparison = result.get("reference_comparison")
    if comparison:
        ref, ours = comparison["reference"], comparison["ours"]
        lines += [
            "",
            "## Against an SSL4MIS-style cross-teaching step (224², batch 8, interleaved A/B)",
            "",
            "| step | s/step | images/s | GFLOP/s | of peak | CPU s/step |",
            "|---|---|---|---|---|---|",
            f"| SSL4MIS-style CTS (fp32 NCHW, SGD, per-sample scipy augmentation, default allocator) | "
            f"{ref['seconds_per_step']:.2f} | {ref['images_per_second']:.2f} | {ref['gflops']:.1f} | "
            f"{ref['fraction_of_peak']:.0%} | {ref['cpu_seconds_per_step']:.2f} |",
            f"| ours, `{REFERENCE_STRATEGY}` paper sizes | {ours['seconds_per_step']:.2f} | "
            f"{ours['images_per_second']:.2f} | {ours['gflops']:.1f} | {ours['fraction_of_peak']:.0%} | "
            f"{ours['cpu_seconds_per_step']:.2f} |",
            "",
            f"Speed-up (wall clock): **{comparison['speedup']:.2f}×**; in CPU seconds per step: "
            f"{comparison['cpu_speedup']:.2f}×.",
        ]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    from napari_semiseg.core.engine.presets import PRESETS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--strategies", nargs="+", default=None, help="presets to time (default: all)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per configuration")
    parser.add_argument("--sizes", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--no-reference", action="store_true", help="skip the SSL4MIS-style comparison")
    parser.add_argument("--out", default=str(RESULTS / "throughput"), help="output path without extension")
    args = parser.parse_args(argv)
    strategies = args.strategies or list(PRESETS)
    unknown = [s for s in strategies if s not in PRESETS]
    if unknown:
        parser.error(f"unknown strategies {unknown}; known: {', '.join(PRESETS)}")

    load_before = load_average()
    from napari_semiseg.core.device import set_threads

    set_threads(0)
    peak = matmul_peak_gflops()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    result = {
        "machine": {"processor": processor_name(), "cores": os.cpu_count(), "torch": torch.__version__,
                    "cpu_capability": torch.backends.cpu.get_cpu_capability(), "threads": torch.get_num_threads()},
        "peak_gflops": round(peak, 1), "load_before": load_before, "load_after": None,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "rows": [], "reference_comparison": None,
    }

    def save() -> None:  # after every configuration, so a long run on a busy machine leaves partial results
        result["load_after"] = load_average()
        out.with_suffix(".json").write_text(json.dumps(result, indent=2))
        out.with_suffix(".md").write_text(markdown(result))

    if not args.no_reference:  # the headline comparison first
        comparison = compare_with_reference(args.steps, peak)
        result["reference_comparison"] = comparison
        print(f"reference {comparison['reference']['seconds_per_step']:.2f} s/step, ours "
              f"{comparison['ours']['seconds_per_step']:.2f} s/step: {comparison['speedup']:.2f}x", flush=True)
        save()
    for setting in sorted(args.sizes, key=lambda name: name != "paper224"):
        for strategy in strategies:
            step = build_engine_step(strategy, setting)
            row = summarise(strategy, setting, step, time_steps(step, args.steps), count_flops(step), peak)
            result["rows"].append(row)
            print(f"{strategy:>24} {setting:>9}: {row['seconds_per_step']:.3f} s/step, "
                  f"{row['images_per_second']:.1f} img/s, {row['fraction_of_peak']:.0%} of peak", flush=True)
            save()
            del step
    peak = max(peak, matmul_peak_gflops())
    result["peak_gflops"] = round(peak, 1)
    comparison = result["reference_comparison"]
    for row in result["rows"] + ([comparison["reference"], comparison["ours"]] if comparison else []):
        row["fraction_of_peak"] = round(row["gflops"] / peak, 3)
    save()
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
