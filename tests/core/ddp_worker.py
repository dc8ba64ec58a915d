"""Run by tests/core/test_distributed.py under torchrun: trains on a tiny phantom and saves
this rank's final weights and iteration count next to the model (not a test module).

Rank 1 alone is asked to stop after ``stop_after`` steps; rank 0 only learns it through the
ranks' agreement, so both must end at that iteration.
"""

import os
import sys

import torch

from napari_semiseg.core.annotations import AnnotationScheme
from napari_semiseg.core.config import TrainConfig
from napari_semiseg.core.engine import TrainingData, loop, train
from napari_semiseg.core.events import TrainingFinished
from napari_semiseg.core.phantoms import paint_slices, ring_phantom


class StopAfter:
    """A stop flag that turns on at its ``calls``-th check (the loop checks it once per step)."""

    def __init__(self, calls: int):
        self.calls = calls

    def is_set(self) -> bool:
        self.calls -= 1
        return self.calls < 0


def main(out_dir: str, strategy: str, stop_after: int) -> None:
    finished = {}
    measure = loop._Run.member_dice_on_painted

    def keep_run(run, slices):  # the networks are local to train(); catch them at the end
        finished["run"] = run
        return measure(run, slices)

    loop._Run.member_dice_on_painted = keep_run
    painted, truth = ring_phantom((8, 32, 32), seed=1)
    unannotated, _ = ring_phantom((8, 32, 32), seed=2)
    data = TrainingData([painted, unannotated], [paint_slices(truth, [2, 5]), None], AnnotationScheme())
    config = TrainConfig(strategy=strategy, iterations=1000, device="cpu", batch_size=4, patch_size=32,
                         network_size="cpu", threads=1, checkpoint_seconds=1.0)
    rank = int(os.environ["RANK"])
    stop = StopAfter(stop_after) if rank == 1 else None
    events = list(train(data, config, out_dir, stop=stop))
    assert isinstance(events[-1], TrainingFinished)
    states = {m.name: m.network.state_dict() for m in finished["run"].members}
    result = {"iteration": events[-1].iteration, "reason": events[-1].reason, "states": states}
    torch.save(result, f"{out_dir}/rank{rank}.pt")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
