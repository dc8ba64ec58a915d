"""Losses and helpers of BoCLIS, BFA and PMCM on tiny hand-computed tensors."""

import math

import pytest
import torch

from napari_semiseg.core.annotations import IGNORE
from napari_semiseg.core.losses.distance import signed_distance_targets
from napari_semiseg.core.losses.mixing import bidirectional_copy_paste, copy_paste, random_box_masks
from napari_semiseg.core.losses.patch_contrastive import (
    REGIONS,
    boundary_guided_regions,
    patch_embeddings,
    sample_patches,
    supervised_contrastive_loss,
)
from napari_semiseg.core.losses.prototypes import (
    blend_prototypes,
    ema_update_prototypes,
    masked_average_prototypes,
    prototype_alignment_loss,
    prototype_reliability,
)
from napari_semiseg.core.losses.segmentation import class_boundary_bands
from napari_semiseg.core.losses.task_consistency import TaskMappings, cyclic_task_consistency
from napari_semiseg.core.losses.teachers import aggregate_teachers, normalised_entropy, weighted_pseudo_label_loss


# --- boundary bands -------------------------------------------------------------------------

def test_class_bands_are_per_class_and_skip_unknown_pixels():
    target = torch.tensor([[[0, 0, 1, 1, 2, 2, IGNORE]]])
    bands = class_boundary_bands(target, 3)
    assert bands[0, 0, 0].tolist() == [0, 1, 1, 0, 0, 0, 0]
    assert bands[0, 1, 0].tolist() == [0, 1, 1, 1, 1, 0, 0]
    assert bands[0, 2, 0].tolist() == [0, 0, 0, 1, 1, 0, 0]  # the IGNORE neighbour adds nothing


# --- signed distances -----------------------------------------------------------------------

def test_signed_distance_is_truncated_fixed_scale_and_negative_inside():
    target = torch.zeros(1, 1, 9, dtype=torch.long)
    target[0, 0, 3:6] = 1
    sdf, valid = signed_distance_targets(target, 2, scale=2.0)
    # columns 0..8: outside distances 3, 2, 1 -> 1.5(clipped 1), 1, 0.5; inside 1, 2, 1 -> -0.5, -1, -0.5
    expected = [1.0, 1.0, 0.5, -0.5, -1.0, -0.5, 0.5, 1.0, 1.0]
    assert sdf[0, 0, 0].tolist() == pytest.approx(expected)
    assert sdf.shape == (1, 1, 1, 9) and valid.sum() == 9


def test_signed_distance_is_per_class_per_slice_and_does_not_depend_on_object_size():
    target = torch.zeros(2, 12, 12, dtype=torch.long)
    target[0, 2:4, 2:4] = 1          # small object of class 1 in slice 0
    target[1, 1:11, 1:11] = 2        # large object of class 2 in slice 1, no class 1
    sdf, _ = signed_distance_targets(target, 3, scale=4.0)
    assert sdf.shape == (2, 2, 12, 12)
    assert sdf[0, 0, 3, 4].item() == pytest.approx(0.25)        # one pixel right of the small object
    assert sdf[1, 1, 5, 11].item() == pytest.approx(0.25)       # one pixel right of the large one: same value
    assert torch.all(sdf[1, 0] == 1.0)                          # class 1 absent from slice 1: outside everywhere
    assert torch.all(sdf[0, 1] == 1.0)                          # class 2 absent from slice 0 (not borrowed from slice 1)
    assert sdf[1, 1, 5, 5].item() == -1.0                       # deep inside, clipped


def test_signed_distance_measures_only_to_known_pixels_and_masks_sparse_slices():
    target = torch.tensor([[[1, IGNORE, IGNORE, 0]], [[IGNORE, IGNORE, IGNORE, 1]]])
    sdf, valid = signed_distance_targets(target, 2, scale=10.0)
    assert sdf[0, 0, 0].tolist() == pytest.approx([-0.3, 0.0, 0.0, 0.3])  # IGNORE is neither inside nor outside
    assert valid[0, 0, 0].tolist() == [1, 0, 0, 1]
    assert valid[1].sum() == 0  # one known pixel in four: a scribble, no target


def test_signed_distance_errors():
    with pytest.raises(ValueError, match="B, H, W"):
        signed_distance_targets(torch.zeros(2, 2, dtype=torch.long), 2)
    with pytest.raises(ValueError, match="only 2 classes"):
        signed_distance_targets(torch.full((1, 2, 2), 2), 2)


# --- uncertainty-weighted teachers -----------------------------------------------------------

def test_teachers_are_weighted_by_softmax_of_negative_entropy():
    confident = torch.tensor([0.9, 0.1])
    unsure = torch.tensor([0.4, 0.6])
    probs = torch.stack([confident, unsure])[:, None, :, None, None]  # (K=2, B=1, C=2, 1, 1)
    mean, labels, weight = aggregate_teachers(probs)
    h = [-(p * p.log()).sum() / math.log(2) for p in (confident, unsure)]
    w = torch.softmax(-torch.stack(h), dim=0)
    expected = w[0] * confident + w[1] * unsure
    assert mean[0, :, 0, 0].tolist() == pytest.approx(expected.tolist(), rel=1e-5)
    assert w[0] > 0.5 and labels.item() == 0
    h_mean = -(expected * expected.log()).sum() / math.log(2)
    assert weight.item() == pytest.approx(1 - h_mean.item(), rel=1e-5)


def test_agreeing_one_hot_teachers_give_full_weight_and_uniform_ones_none():
    one_hot = torch.tensor([0.0, 0.0, 1.0])[None, None, :, None, None].expand(3, 1, 3, 1, 1)
    _, labels, weight = aggregate_teachers(one_hot)
    assert labels.item() == 2 and weight.item() == pytest.approx(1.0, abs=1e-5)
    _, _, weight = aggregate_teachers(torch.full((3, 1, 3, 1, 1), 1 / 3))
    assert weight.item() == pytest.approx(0.0, abs=1e-5)
    assert normalised_entropy(torch.full((1, 4, 1, 1), 0.25)).item() == pytest.approx(1.0)


def test_weighted_pseudo_label_loss_scales_cross_entropy_by_omega():
    logits = torch.log(torch.tensor([[[[0.8]], [[0.2]]]]))
    labels = torch.zeros(1, 1, 1, dtype=torch.long)
    full = weighted_pseudo_label_loss(logits, labels, torch.ones(1, 1, 1))
    half = weighted_pseudo_label_loss(logits, labels, torch.full((1, 1, 1), 0.5))
    assert (full - half).item() == pytest.approx(-0.5 * math.log(0.8), rel=1e-5)


def test_teacher_shape_error():
    with pytest.raises(ValueError, match="K, B, C, H, W"):
        aggregate_teachers(torch.rand(2, 3, 4, 4))


# --- boundary-guided patches and the patch contrastive loss -----------------------------------

def test_regions_split_each_class_into_edge_centre_and_whole():
    target = torch.zeros(1, 9, 9, dtype=torch.long)
    target[0, 1:8, 1:8] = 1
    regions = boundary_guided_regions(target, 2, band_kernel=3, centre_kernel=3)
    edge, centre, whole = (regions[0, 1, REGIONS.index(r)] for r in REGIONS)
    assert whole.sum() == 49 and centre.sum() == 25  # 7x7 eroded by one pixel
    assert edge[4].tolist() == [0, 1, 0, 0, 0, 0, 0, 1, 0]  # the band's pixels inside the class


def test_sampling_draws_only_inside_non_empty_regions():
    target = torch.zeros(2, 8, 8, dtype=torch.long)
    target[0, 2:6, 2:6] = 1
    target[1] = IGNORE
    regions = boundary_guided_regions(target, 3)
    samples = sample_patches(regions, 4, torch.Generator().manual_seed(0))
    assert set(samples.image.tolist()) == {0}          # image 1 is unknown everywhere
    assert set(samples.label.tolist()) == {0, 1}       # class 2 is absent
    picked = regions[samples.image, samples.label, samples.region, samples.y, samples.x]
    assert torch.all(picked == 1)
    assert samples.anchors.sum() == 4  # the edge patches of class 1


def test_patch_embeddings_average_the_window_at_the_feature_stride():
    features = torch.arange(16.0).reshape(1, 1, 4, 4)
    target = torch.zeros(1, 8, 8, dtype=torch.long)
    samples = sample_patches(boundary_guided_regions(target, 2), 1)
    samples.y[:] = 3
    samples.x[:] = 2  # feature pixel (1, 1), stride 2
    embedded = patch_embeddings(features, samples, stride=2, window=3)
    assert embedded[0, 0].item() == pytest.approx(features[0, 0, 0:3, 0:3].mean().item())


def test_supervised_contrastive_loss_by_hand():
    z = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    labels = torch.tensor([1, 1, 0])
    anchors = torch.tensor([True, False, False])
    tau = 0.5
    # anchor 0: positive 1 (cos 1), negative 2 (cos 0)
    expected = -math.log(math.exp(1 / tau) / (math.exp(1 / tau) + math.exp(0)))
    assert supervised_contrastive_loss(z, labels, anchors, tau).item() == pytest.approx(expected, rel=1e-5)
    # an anchor without positives counts for nothing
    assert supervised_contrastive_loss(z, torch.tensor([1, 2, 0]), anchors, tau).item() == 0.0


def test_contrastive_loss_shape_error():
    with pytest.raises(ValueError, match="N, D"):
        supervised_contrastive_loss(torch.rand(3, 2), torch.zeros(2), torch.ones(3, dtype=torch.bool))


# --- prototypes -----------------------------------------------------------------------------

def test_masked_average_prototypes_pool_over_the_batch():
    features = torch.tensor([[[[1.0, 3.0]], [[0.0, 2.0]]]])  # (1, D=2, 1, 2)
    masks = torch.tensor([[[[1.0, 1.0]], [[0.0, 1.0]], [[0.0, 0.0]]]])  # (1, C=3, 1, 2)
    prototypes, present = masked_average_prototypes(features, masks)
    assert prototypes.tolist() == [[2.0, 1.0], [3.0, 2.0], [0.0, 0.0]]
    assert present.tolist() == [True, True, False]
    with pytest.raises(ValueError, match="share batch and size"):
        masked_average_prototypes(features, masks[..., :1])


def test_alignment_is_one_minus_cosine_over_shared_classes_and_pulls_only_the_moving_side():
    moving = torch.tensor([[1.0, 0.0], [1.0, 1.0], [5.0, 5.0]], requires_grad=True)
    reference = torch.tensor([[0.0, 1.0], [2.0, 2.0], [1.0, 0.0]], requires_grad=True)
    loss = prototype_alignment_loss(moving, torch.tensor([True, True, True]), reference,
                                    torch.tensor([True, True, False]))
    assert loss.item() == pytest.approx((1.0 + 0.0) / 2)
    loss.backward()
    assert reference.grad is None and moving.grad is not None


def test_blend_and_ema_bank():
    a, b = torch.tensor([[1.0], [1.0], [0.0]]), torch.tensor([[3.0], [0.0], [5.0]])
    blended, present = blend_prototypes(a, torch.tensor([True, True, False]), b, torch.tensor([True, False, True]), 0.25)
    assert blended.squeeze(1).tolist() == [1.5, 1.0, 5.0] and present.all()
    bank, filled = torch.zeros(3, 1), torch.tensor([True, False, False])
    bank, filled = ema_update_prototypes(bank, filled, torch.tensor([[10.0], [4.0], [7.0]]),
                                         torch.tensor([True, True, False]), 0.9)
    assert bank.squeeze(1).tolist() == pytest.approx([1.0, 4.0, 0.0]) and filled.tolist() == [True, True, False]


def test_reliability_is_high_when_similarities_match_probabilities():
    prototypes = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    features = torch.tensor([[1.0, 0.0]])[:, :, None, None]  # (1, D=2, 1, 1), looks like class 0
    agrees = torch.tensor([[1.0, 0.0]])[:, :, None, None]
    contradicts = torch.tensor([[0.0, 1.0]])[:, :, None, None]
    assert prototype_reliability(features, agrees, prototypes).item() == pytest.approx(1.0)
    assert prototype_reliability(features, contradicts, prototypes).item() == pytest.approx(0.0)
    half = torch.tensor([[0.5, 0.5]])[:, :, None, None]
    assert prototype_reliability(features, half, prototypes).item() == pytest.approx(1 - 0.25)
    with pytest.raises(ValueError, match="prototypes must be"):
        prototype_reliability(features, agrees, prototypes[:, :1])


# --- cyclic task consistency ----------------------------------------------------------------

def test_cyclic_consistency_is_multiclass_and_trains_the_mappings():
    torch.manual_seed(0)
    mappings = TaskMappings(4)
    logits = torch.randn(2, 4, 5, 5, requires_grad=True)
    sdf = torch.tanh(torch.randn(2, 3, 5, 5))
    mapping, cycle = cyclic_task_consistency(mappings, logits, sdf)
    assert mapping.item() > 0 and cycle.item() > 0
    (mapping + cycle).backward()
    assert logits.grad is not None and all(p.grad is not None for p in mappings.parameters())
    optimiser = torch.optim.Adam(mappings.parameters(), lr=1e-2)
    for _ in range(40):
        optimiser.zero_grad()
        sum(cyclic_task_consistency(mappings, logits.detach(), sdf)).backward()
        optimiser.step()
    assert sum(cyclic_task_consistency(mappings, logits.detach(), sdf)).item() < (mapping + cycle).item()
    with pytest.raises(ValueError, match="C-1"):
        cyclic_task_consistency(mappings, logits, sdf[:, :2])


# --- mixing ---------------------------------------------------------------------------------

def test_box_masks_have_the_requested_size():
    boxes = random_box_masks(3, 6, 9, fraction=2 / 3, generator=torch.Generator().manual_seed(1))
    assert boxes.shape == (3, 6, 9) and torch.all(boxes.sum(dim=(1, 2)) == 4 * 6)


def test_copy_paste_mixes_images_and_label_maps_both_ways():
    box = torch.tensor([[[True, False], [False, False]]])
    labelled = torch.tensor([[[1, 1], [1, 1]]])
    pseudo = torch.tensor([[[2, IGNORE], [2, 2]]])
    mixed = bidirectional_copy_paste(labelled, pseudo, box)
    assert mixed.tolist() == [[[1, IGNORE], [2, 2]], [[2, 1], [1, 1]]]
    images = copy_paste(torch.ones(1, 1, 2, 2), torch.zeros(1, 1, 2, 2), box)
    assert images[0, 0].tolist() == [[1.0, 0.0], [0.0, 0.0]]
    with pytest.raises(ValueError, match="box must be"):
        copy_paste(labelled, pseudo, box[:, :1])
