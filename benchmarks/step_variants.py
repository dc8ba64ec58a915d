"""A/B measurements behind the speed settings of the training step (README "Speed").

    .venv/bin/python benchmarks/step_variants.py [--rounds 4] [--only layout sdpa bf16 threads compile]

Each experiment times one network's forward + backward + AdamW step on a batch of 8,
alternating the variants round by round (A/B/A/B...) and reporting medians, because other
work on a shared machine changes timings from minute to minute. Besides wall-clock seconds
it records the process's CPU seconds per step: with one thread (``--threads 1``, the
default) that is the work a variant needs, and far less disturbed by other processes than
wall time on a loaded machine. Results are printed and appended to
resources/benchmarks/step_variants.jsonl.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from napari_semiseg.core.device import set_threads, tune_cpu_allocator  # noqa: E402
from napari_semiseg.core.networks import blocks, build_network  # noqa: E402

RESULTS = ROOT / "resources" / "benchmarks" / "step_variants.jsonl"
CASES = {"cpu128": ("cpu", 128), "paper224": ("paper", 224)}


class Trainer:
    """One network with its optimiser and a fixed batch; ``step()`` is forward+backward+update."""

    def __init__(self, network: str, case: str, channels_last: bool, autocast: bool = False, compiled=False):
        size, side = CASES[case]
        torch.manual_seed(0)
        self.net = build_network(network, 1, 3, size)
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        self.net = self.net.to(memory_format=fmt)
        self.optimizer = torch.optim.AdamW(self.net.parameters(), 1e-3)
        self.images = torch.randn(8, 1, side, side).contiguous(memory_format=fmt)
        self.targets = torch.randint(0, 3, (8, side, side))
        self.autocast = autocast
        self.forward = torch.compile(self.net) if compiled else self.net

    def step(self) -> None:
        context = torch.autocast("cpu", torch.bfloat16) if self.autocast else contextlib.nullcontext()
        with context:
            logits = self.forward(self.images)
        loss = F.cross_entropy(logits.float(), self.targets)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()


def interleave(variants: dict, rounds: int, setup=None) -> dict:
    """Median seconds per step of each variant, alternating variants every round."""
    wall = {name: [] for name in variants}
    cpu = {name: [] for name in variants}
    for name, (trainer, prepare) in variants.items():
        prepare()
        trainer.step()
    for _ in range(rounds):
        for name, (trainer, prepare) in variants.items():
            prepare()
            started, started_cpu = time.perf_counter(), time.process_time()
            trainer.step()
            wall[name].append(time.perf_counter() - started)
            cpu[name].append(time.process_time() - started_cpu)
    return {name: {"cpu_s": round(statistics.median(cpu[name]), 4), "wall_s": round(statistics.median(wall[name]), 4),
                   "cpu_all": [round(x, 3) for x in cpu[name]]}
            for name in variants}


def noop() -> None:
    return None


def experiment_layout(rounds: int) -> list[dict]:
    out = []
    for case in CASES:
        for network in ("unet", "swin_unet", "cs_unet"):
            variants = {f"nchw": (Trainer(network, case, False), noop),
                        f"channels_last": (Trainer(network, case, True), noop)}
            out.append({"experiment": "layout", "network": network, "case": case,
                        **interleave(variants, rounds)})
            print(out[-1], flush=True)
    return out


def _sdpa_attention(self, qkv):
    """WindowAttention.forward with scaled_dot_product_attention (same maths)."""
    b, h, w, _ = qkv.shape
    geometry = blocks.window_geometry(h, w, self.window_size, self.shifted)
    win_h, win_w, shift_h, shift_w, pad_h, pad_w = geometry
    if pad_h or pad_w:
        qkv = F.pad(qkv, (0, 0, 0, pad_w, 0, pad_h))
    if shift_h or shift_w:
        qkv = torch.roll(qkv, (-shift_h, -shift_w), dims=(1, 2))
    windows = blocks.window_partition(qkv, win_h, win_w)
    n_windows, n_tokens = windows.shape[1:3]
    heads, head_dim = self.num_heads, self.dim // self.num_heads
    q, k, v = windows.reshape(b, n_windows, n_tokens, 3, heads, head_dim).permute(3, 0, 1, 4, 2, 5)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=self._attention_bias(h, w, geometry))
    out = out.transpose(2, 3).reshape(b, n_windows, n_tokens, self.dim)
    out = blocks.window_merge(out, h + pad_h, w + pad_w, win_h, win_w)
    if shift_h or shift_w:
        out = torch.roll(out, (shift_h, shift_w), dims=(1, 2))
    return out[:, :h, :w] if pad_h or pad_w else out


def experiment_sdpa(rounds: int) -> list[dict]:
    original = blocks.WindowAttention.forward
    out = []
    for case in CASES:
        for network in ("swin_unet",):
            trainer = Trainer(network, case, False)

            def use(function):
                return lambda: setattr(blocks.WindowAttention, "forward", function)

            variants = {"matmul": (trainer, use(original)), "sdpa": (trainer, use(_sdpa_attention))}
            out.append({"experiment": "sdpa", "network": network, "case": case, **interleave(variants, rounds)})
            blocks.WindowAttention.forward = original
            print(out[-1], flush=True)
    return out


def experiment_bf16(rounds: int) -> list[dict]:
    out = []
    for network in ("unet", "swin_unet"):
        variants = {"fp32": (Trainer(network, "cpu128", network == "unet"), noop),
                    "bf16_autocast": (Trainer(network, "cpu128", network == "unet", autocast=True), noop)}
        out.append({"experiment": "bf16", "network": network, "case": "cpu128", **interleave(variants, rounds)})
        print(out[-1], flush=True)
    return out


def experiment_threads(rounds: int) -> list[dict]:
    out = []
    for network in ("unet", "swin_unet"):
        trainer = Trainer(network, "cpu128", network == "unet")
        variants = {"threads_1": (trainer, lambda: set_threads(1)), "threads_2": (trainer, lambda: set_threads(2))}
        out.append({"experiment": "threads", "network": network, "case": "cpu128", **interleave(variants, rounds)})
        print(out[-1], flush=True)
    return out


def experiment_compile(rounds: int) -> list[dict]:
    out = []
    for network in ("unet",):
        eager = Trainer(network, "cpu128", True)
        compiled = Trainer(network, "cpu128", True, compiled=True)
        started = time.perf_counter()
        compiled.step()
        compile_seconds = time.perf_counter() - started
        variants = {"eager": (eager, noop), "compiled": (compiled, noop)}
        out.append({"experiment": "compile", "network": network, "case": "cpu128",
                    "compile_seconds": round(compile_seconds, 1), **interleave(variants, rounds)})
        print(out[-1], flush=True)
    return out


EXPERIMENTS = {"layout": experiment_layout, "sdpa": experiment_sdpa, "bf16": experiment_bf16,
               "threads": experiment_threads, "compile": experiment_compile}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0 = all cores)")
    parser.add_argument("--only", nargs="+", default=["layout", "sdpa", "bf16", "threads"], choices=list(EXPERIMENTS))
    args = parser.parse_args(argv)
    tune_cpu_allocator()
    set_threads(args.threads)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    for name in args.only:
        load = [round(x, 2) for x in os.getloadavg()]
        set_threads(args.threads)
        for record in EXPERIMENTS[name](args.rounds):
            record.update(load_before=load, load_after=[round(x, 2) for x in os.getloadavg()],
                          date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), threads=args.threads,
                          cpu_capability=torch.backends.cpu.get_cpu_capability())
            with open(RESULTS, "a") as handle:
                handle.write(json.dumps(record) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
