"""Out of memory: prediction shrinks its chunks then tiles, training halves its batch, then refuses."""

import numpy as np
import pytest
import torch

from napari_semiseg.core.annotations import AnnotationScheme
from napari_semiseg.core.config import TrainConfig
from napari_semiseg.core.engine import TrainingData, get_preset, train
from napari_semiseg.core.engine import loop as loop_module
from napari_semiseg.core.engine.members import build_members
from napari_semiseg.core.events import TrainingFinished
from napari_semiseg.core.memory import OutOfMemory, is_out_of_memory
from napari_semiseg.core.model import TrainedModel
from napari_semiseg.core.phantoms import paint_slices, ring_phantom
from napari_semiseg.core.predict import predict_volume


class RunsOutAbove(torch.nn.Module):
    """A network that fails like torch does when its input holds more than ``limit`` pixels."""

    def __init__(self, network, limit):
        super().__init__()
        self.network, self.limit, self.seen = network, limit, []

    def forward(self, x):
        self.seen.append(tuple(x.shape))
        if x.shape[0] * x.shape[2] * x.shape[3] > self.limit:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return self.network(x)


def _model(limit=None):
    device = torch.device("cpu")
    member = build_members(get_preset("supervised"), 3, "cpu", device, 0)[0]
    network = member.network.eval()
    if limit is not None:
        network = RunsOutAbove(network, limit)
    return TrainedModel({"cnn": network}, (0, 1, 2), AnnotationScheme(), TrainConfig(), 0, device)


def test_out_of_memory_is_recognised():
    assert is_out_of_memory(RuntimeError("CUDA out of memory. Tried to allocate"))
    assert is_out_of_memory(RuntimeError("[enforce fail at alloc_cpu.cpp] DefaultCPUAllocator: can't allocate memory"))
    assert is_out_of_memory(MemoryError())
    assert not is_out_of_memory(RuntimeError("shape mismatch"))


def test_prediction_shrinks_chunks_then_tiles_and_matches_the_whole_slice_result():
    volume, _ = ring_phantom((4, 128, 128), seed=1)
    reference = predict_volume(_model(), volume)
    one_slice = _model(limit=128 * 128)
    chunked = predict_volume(one_slice, volume)
    seen = one_slice.networks["cnn"].seen
    assert [shape[0] for shape in seen[:3]] == [4, 2, 1] and {shape[0] for shape in seen[2:]} == {1}
    assert np.mean(chunked.labels == reference.labels) > 0.999

    tiles = _model(limit=100 * 100)
    tiled = predict_volume(tiles, volume)
    assert tiled.labels.shape == volume.shape
    assert max(s[2] for s in tiles.networks["cnn"].seen[-4:]) <= 64 + 2 * 16
    assert np.mean(tiled.labels == reference.labels) > 0.9, "tiles with a margin should mostly agree"


def test_prediction_that_fits_nowhere_says_what_to_do():
    volume, _ = ring_phantom((2, 128, 128), seed=1)
    with pytest.raises(OutOfMemory, match="even one slice at a time in 64x64-pixel tiles.*crop the volume"):
        predict_volume(_model(limit=10), volume)


def _data():
    volume, truth = ring_phantom((8, 48, 48), seed=3)
    return TrainingData([volume], [paint_slices(truth, [2, 5])], AnnotationScheme())


def _fail_above(monkeypatch, limit):
    real_step = loop_module._Run.step
    sizes = []

    def step(self, batch, progress):
        sizes.append(batch.images.shape[0])
        if batch.images.shape[0] > limit:
            raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 9 GB")
        return real_step(self, batch, progress)

    monkeypatch.setattr(loop_module._Run, "step", step)
    return sizes


def test_training_halves_the_batch_when_memory_runs_out(tmp_path, monkeypatch):
    sizes = _fail_above(monkeypatch, 2)
    events = list(train(_data(), TrainConfig(strategy="supervised", iterations=3, batch_size=8, patch_size=32),
                        tmp_path))
    assert isinstance(events[-1], TrainingFinished) and events[-1].iteration == 3
    assert sizes[:3] == [8, 4, 2] and set(sizes[3:]) == {2}


def test_training_that_fits_nowhere_says_how_large_a_volume_fits(tmp_path, monkeypatch):
    _fail_above(monkeypatch, 0)
    with pytest.raises(OutOfMemory, match=r"even with 2 slices of 32x32 pixels.*about [\d,]+ voxels of training "
                                          r"data fit in the memory free now, and these volumes have 18,432"):
        list(train(_data(), TrainConfig(strategy="supervised", iterations=3, batch_size=8, patch_size=32), tmp_path))
