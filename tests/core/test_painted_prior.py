"""Blending the propagated painted slices into a prediction (core.predict.PaintedPrior)."""

import numpy as np
import pytest
import torch
from scipy import ndimage

from napari_semiseg.core.annotations import AnnotationMode, AnnotationScheme
from napari_semiseg.core.config import TrainConfig
from napari_semiseg.core.engine import TrainingData, get_preset, train
from napari_semiseg.core.engine.members import build_members
from napari_semiseg.core.model import TrainedModel, load_model
from napari_semiseg.core.phantoms import paint_slices, ring_phantom
from napari_semiseg.core.predict import (PaintedPrior, blend_with_prior, painted_prior, predict_volume,
                                         keep_seeded_components, prior_probabilities)
from napari_semiseg.core.predict import _predict_piecewise

PAINTED = [3, 8, 12]
UNPAINTED = [k for k in range(16) if k not in PAINTED]


def _dice(prediction, truth):
    values = []
    for label in (1, 2):
        a, b = prediction == label, truth == label
        values.append(2 * (a & b).sum() / max(a.sum() + b.sum(), 1))
    return float(np.mean(values))


def _every_region_holds_a_scribble_of_its_class(prediction, scribbles, classes=(1, 2)):
    for value in classes:
        regions, count = ndimage.label(prediction == value)
        if not all(np.any(scribbles[regions == region] == value) for region in range(1, count + 1)):
            return False
    return True


def _untrained_model(label_values=(0, 1, 2)):
    device = torch.device("cpu")
    member = build_members(get_preset("supervised"), len(label_values), "cpu", device, 0)[0]
    return TrainedModel({"cnn": member.network.eval()}, label_values, AnnotationScheme(), TrainConfig(), 0, device)


def test_prior_mixes_its_label_with_no_opinion_by_its_quality():
    labels = np.array([[[0, 1, 2, 7, 2]]])
    quality = np.array([[[0.7, 0.4, 1.0, 0.8, 0.0]]], dtype=np.float32)
    probabilities = prior_probabilities(labels, quality, (0, 1, 2))
    assert probabilities.shape == (1, 3, 1, 5)
    np.testing.assert_allclose(probabilities[0, :, 0, 0], [0.8, 0.1, 0.1], rtol=1e-6)
    np.testing.assert_allclose(probabilities[0, :, 0, 1], [0.2, 0.6, 0.2], rtol=1e-6)
    np.testing.assert_allclose(probabilities[0, :, 0, 2], [0.0, 0.0, 1.0])
    np.testing.assert_allclose(probabilities[0, :, 0, 3], [1 / 3] * 3, err_msg="an unknown label has no opinion")
    np.testing.assert_allclose(probabilities[0, :, 0, 4], [1 / 3] * 3, err_msg="quality 0 has no opinion")


def test_blending_is_a_renormalised_product():
    network = torch.tensor([[0.6, 0.3, 0.1]])[..., None, None]
    prior = np.array([[0.2, 0.7, 0.1]], dtype=np.float32)[..., None, None]
    blended = blend_with_prior(network, prior)[0, :, 0, 0]
    expected = np.array([0.12, 0.21, 0.01]) / 0.34
    np.testing.assert_allclose(blended.numpy(), expected, rtol=1e-5)
    uniform = np.full((1, 3, 1, 1), 1 / 3, dtype=np.float32)
    np.testing.assert_allclose(blend_with_prior(network, uniform).numpy(), network.numpy(), rtol=1e-5)
    assert blend_with_prior(network, None) is network


def test_a_certain_prior_wins_and_no_prior_changes_nothing():
    volume, truth = ring_phantom((6, 64, 64), seed=2)
    model = _untrained_model()
    network = predict_volume(model, volume)
    certain = predict_volume(model, volume, prior=PaintedPrior(truth, np.ones(truth.shape, np.float32)))
    np.testing.assert_array_equal(certain.labels, truth)
    assert certain.certainty.min() > 0.99
    silent = predict_volume(model, volume, prior=PaintedPrior(truth, np.zeros(truth.shape, np.float32)))
    np.testing.assert_array_equal(silent.labels, network.labels)
    with pytest.raises(ValueError, match="prior has shape"):
        predict_volume(model, volume, prior=PaintedPrior(truth[:3], np.ones(truth[:3].shape, np.float32)))


def test_tiled_prediction_blends_each_tile_with_its_own_part_of_the_prior():
    volume, truth = ring_phantom((2, 128, 128), seed=3)
    model = _untrained_model()
    slices = volume.array.astype(np.float32)
    quality = np.full(truth.shape, 0.9, np.float32)
    whole = _predict_piecewise(model, slices, None, (truth, quality))
    tiled = _predict_piecewise(model, slices, 64, (truth, quality))
    np.testing.assert_array_equal(whole[0], truth)
    np.testing.assert_array_equal(tiled[0], truth)


def test_painted_prior_only_for_painted_slices():
    volume, truth = ring_phantom((16, 64, 64), seed=1)
    sparse = paint_slices(truth, PAINTED)
    prior = painted_prior(volume, sparse, AnnotationScheme())
    assert prior.labels.shape == truth.shape
    np.testing.assert_array_equal(prior.labels[PAINTED], truth[PAINTED])
    assert np.all(prior.quality[PAINTED] == 1.0) and prior.quality[UNPAINTED].max() < 1.0
    assert _dice(prior.labels[UNPAINTED], truth[UNPAINTED]) > 0.7
    assert painted_prior(volume, None, AnnotationScheme()) is None
    assert painted_prior(volume, np.zeros_like(truth), AnnotationScheme()) is None


def test_only_regions_holding_a_scribble_of_their_class_are_kept():
    labels = np.zeros((3, 8, 12), dtype=np.uint8)
    labels[1, 1:3, 1:3] = 1        # seeded by a class-1 scribble
    labels[0:3, 5:7, 1:3] = 1      # a separate region of class 1, no scribble: dropped
    labels[1, 1:3, 3:5] = 2        # class 2 touching the seeded class-1 region, its own seed: kept
    labels[1, 5:7, 8:11] = 2       # class 2 holding only a class-1 scribble: dropped
    seeds = np.zeros_like(labels)
    seeds[1, 1, 1] = seeds[1, 6, 9] = 1
    seeds[1, 2, 4] = 2
    expected = labels.copy()
    expected[0:3, 5:7, 1:3] = 0
    expected[1, 5:7, 8:11] = 0
    np.testing.assert_array_equal(keep_seeded_components(labels, seeds), expected)


def test_scribble_prediction_keeps_scribbles_and_drops_what_no_scribble_holds():
    volume, truth = ring_phantom((8, 64, 64), seed=2)
    scribbles = np.zeros_like(truth)
    scribbles[4, 30:34, 30:34] = 1
    scribbles[4, 20, 20:44] = 3               # background, painted with label 3
    scheme = AnnotationScheme(AnnotationMode.SCRIBBLES, 0, 3)
    prior = painted_prior(volume, scribbles, scheme)
    assert prior.labels[4, 20, 30] == 0 and prior.quality[4, 20, 30] == 1.0 and prior.quality[0, 0, 0] == 0.0
    model = _untrained_model()
    network = predict_volume(model, volume).labels
    blended = predict_volume(model, volume, prior=prior).labels
    assert np.all(blended[4, 30:34, 30:34] == 1) and np.all(blended[4, 20, 20:44] == 0)
    assert _every_region_holds_a_scribble_of_its_class(blended, scribbles)
    assert np.count_nonzero(blended) < np.count_nonzero(network)
    assert painted_prior(volume, np.zeros_like(scribbles), scheme) is None


def test_blending_lifts_a_briefly_trained_network_above_both_its_parts(tmp_path):
    """After 15 steps the network alone is poor; blended with propagation it beats both."""
    volume, truth = ring_phantom((16, 64, 64), seed=1)
    sparse = paint_slices(truth, PAINTED)
    config = TrainConfig(strategy="supervised", iterations=15, seed=0, patch_size=64)
    list(train(TrainingData([volume], [sparse], AnnotationScheme()), config, tmp_path))
    model = load_model(tmp_path)
    prior = painted_prior(volume, sparse, AnnotationScheme())
    network = _dice(predict_volume(model, volume).labels[UNPAINTED], truth[UNPAINTED])
    propagated = _dice(prior.labels[UNPAINTED], truth[UNPAINTED])
    blended_prediction = predict_volume(model, volume, prior=prior)
    blended = _dice(blended_prediction.labels[UNPAINTED], truth[UNPAINTED])
    np.testing.assert_array_equal(blended_prediction.labels[PAINTED], truth[PAINTED])
    assert blended >= max(network, propagated) - 0.01, (network, propagated, blended)
    assert blended > network + 0.05, (network, propagated, blended)


class _Events(list):
    put = list.append


def test_worker_blends_every_painted_slice_into_the_final_and_loaded_predictions(tmp_path):
    """The widget's jobs: held-out slices are not trained on, but the final prediction keeps them."""
    import threading

    from napari_semiseg.ui.training_process import PredictionJob, TrainingJob, VolumePredicted, _run_job, \
        _run_prediction

    volume, truth = ring_phantom((16, 64, 64), seed=1)
    painted = paint_slices(truth, PAINTED)
    training = paint_slices(truth, PAINTED[:2])  # slice 12 held out for validation
    data = TrainingData([volume], [training], AnnotationScheme())
    config = TrainConfig(strategy="supervised", iterations=2, seed=0, patch_size=64, device="cpu")
    events = _Events()
    _run_job(TrainingJob(data, config, str(tmp_path), painted=painted), events, threading.Event(),
             threading.Event(), [0, -1])
    final = next(e for e in events if isinstance(e, VolumePredicted))
    np.testing.assert_array_equal(final.labels[PAINTED], truth[PAINTED])

    loaded, compared = _Events(), _Events()
    _run_prediction(PredictionJob(final.model_path, volume, "load", device="cpu", painted=painted,
                                  scheme=AnnotationScheme()), loaded)
    _run_prediction(PredictionJob(final.model_path, volume, "compare:v1", device="cpu"), compared)
    np.testing.assert_array_equal(loaded[0].labels[PAINTED], truth[PAINTED])
    assert not np.array_equal(compared[0].labels[PAINTED], truth[PAINTED]), "2 steps cannot learn it alone"


def test_worker_blends_scribbles_into_the_final_prediction(tmp_path):
    """Scribble mode: scribbled voxels come back as scribbled, and each region holds a scribble."""
    import threading

    from napari_semiseg.ui.training_process import TrainingJob, VolumePredicted, _run_job

    volume, truth = ring_phantom((16, 64, 64), seed=1)
    scribbles = np.zeros_like(truth)
    rows = truth[6:10, 32, 8:56]
    scribbles[6:10, 32, 8:56] = np.where(rows > 0, rows, 3)  # one stroke per slice; 3 paints background
    scheme = AnnotationScheme(AnnotationMode.SCRIBBLES, 0, 3)
    config = TrainConfig(strategy="supervised", iterations=2, seed=0, patch_size=64, device="cpu")
    events = _Events()
    _run_job(TrainingJob(TrainingData([volume], [scribbles], scheme), config, str(tmp_path)), events,
             threading.Event(), threading.Event(), [0, -1])
    final = next(e for e in events if isinstance(e, VolumePredicted)).labels
    stroke = scribbles > 0
    np.testing.assert_array_equal(final[stroke], np.where(scribbles[stroke] == 3, 0, scribbles[stroke]))
    assert _every_region_holds_a_scribble_of_its_class(final, scribbles)
