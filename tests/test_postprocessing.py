# SPDX-License-Identifier: Apache-2.0
"""Tests for bundle.postprocessing: largest component, hole filling, the transform pair and the volume."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import FillHoles
from monai.utils.type_conversion import convert_to_numpy

import bundle.postprocessing as pp
from bundle.postprocessing import (
    CranialCavityPostprocess,
    CranialCavityPostprocessd,
    fill_holes,
    fill_holes_axial,
    intracranial_volume_ml,
    keep_largest_component,
    postprocess_cranial_cavity,
)


def _shell_case() -> tuple[np.ndarray, np.ndarray]:
    """A mask with an enclosed 3D hole, an axial-only hole open through the bottom, and a separate island.

    Returns (input, expected after LCC + 3D filling + axial filling).
    """
    mask = np.zeros((20, 20, 16), dtype=bool)
    mask[3:15, 3:15, 2:14] = True  # the big component
    mask[7:10, 7:10, 6:9] = False  # enclosed 3D hole
    mask[5:7, 11:13, 2:5] = False  # a channel open through the bottom face (z=2): a hole in each axial slice only
    mask[17:19, 17:19, 17 - 4 : 15] = True  # an island, not connected
    expected = np.zeros_like(mask)
    expected[3:15, 3:15, 2:14] = True
    return mask, expected


def test_keep_largest_component_removes_island_and_keeps_main():
    mask, _ = _shell_case()
    out = keep_largest_component(mask)
    assert not out[17:19, 17:19].any()
    assert out[3, 3, 2] and out.sum() == mask[:16, :16].sum()


@pytest.mark.parametrize("connectivity, expected_voxels", [(1, 4), (3, 5)])
def test_keep_largest_component_connectivity(connectivity, expected_voxels):
    mask = np.zeros((6, 6, 6), dtype=bool)
    mask[1:5, 1, 1] = True  # 4 voxels in a row
    mask[5, 2, 2] = True  # touches the row's end only at a corner
    mask[0, 5, 5] = mask[0, 4, 5] = True  # a 2-voxel piece
    assert keep_largest_component(mask, connectivity).sum() == expected_voxels


def test_keep_largest_component_empty_and_single():
    assert not keep_largest_component(np.zeros((4, 4, 4))).any()
    one = np.zeros((4, 4, 4))
    one[1, 2, 3] = 1
    np.testing.assert_array_equal(keep_largest_component(one), one.astype(bool))


def test_fill_holes_3d_fills_enclosed_only():
    mask, _ = _shell_case()
    out = fill_holes(mask)
    assert out[7:10, 7:10, 6:9].all()
    assert not out[5:7, 11:13, 2:5].any(), "a cavity open to the outside is not a 3D hole"
    assert not out[16, 16, 0], "outside stays background"


def test_fill_holes_axial_fills_slice_holes():
    mask, _ = _shell_case()
    out = fill_holes_axial(mask)
    assert out[5:7, 11:13, 2:5].all() and out[7:10, 7:10, 6:9].all()
    ring = np.zeros((7, 7, 3), bool)
    ring[1:6, 1:6, :] = True
    ring[2:5, 2:5, :] = False
    ring[3, 0:3, 1] = False  # opens the middle slice's hole to the border
    out = fill_holes_axial(ring)
    assert out[2:5, 2:5, 0].all() and out[2:5, 2:5, 2].all()
    assert not out[3, 3, 1]


@pytest.mark.parametrize("connectivity", [1, 2, 3])
@pytest.mark.parametrize("seed", [0, 1])
def test_fill_holes_matches_monai(connectivity, seed):
    rng = np.random.default_rng(seed)
    mask = rng.random((14, 12, 10)) < 0.6
    expected = FillHoles(applied_labels=[1], connectivity=connectivity)(mask[None].astype(np.uint8))[0]
    np.testing.assert_array_equal(fill_holes(mask, connectivity), np.asarray(expected).astype(bool))


def test_postprocess_full_pipeline():
    mask, expected = _shell_case()
    np.testing.assert_array_equal(postprocess_cranial_cavity(mask, fill_holes_2d=True), expected)
    partial = postprocess_cranial_cavity(mask)  # no axial filling: the open channel stays
    assert not partial[5:7, 11:13, 2:5].any() and partial[7:10, 7:10, 6:9].all()


def _as(kind, array):
    if kind == "numpy":
        return array
    if kind == "torch":
        return torch.as_tensor(array)
    return MetaTensor(torch.as_tensor(array), affine=torch.diag(torch.tensor([0.5, 0.5, 2.0, 1.0])), meta={"x": 1})


@pytest.mark.parametrize("kind", ["numpy", "torch", "meta"])
@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_transform_types_preserved_and_input_unchanged(kind, dtype):
    mask, expected = _shell_case()
    img = _as(kind, mask[None].astype(dtype))
    before = convert_to_numpy(img).copy()
    out = CranialCavityPostprocess(fill_holes_2d=True)(img)
    assert type(out) is type(img)
    assert out.dtype == img.dtype and tuple(out.shape) == tuple(img.shape)
    np.testing.assert_array_equal(convert_to_numpy(out)[0].astype(bool), expected)
    np.testing.assert_array_equal(convert_to_numpy(img), before)
    if kind == "meta":
        torch.testing.assert_close(out.affine, img.affine)
        assert out.meta["x"] == 1


def test_transform_threshold_probabilities():
    prob = np.zeros((1, 8, 8, 8), np.float32)
    prob[0, 2:6, 2:6, 2:6] = 0.9
    prob[0, 0, 0, 0] = 0.4  # below threshold: not an island
    out = CranialCavityPostprocess()(prob)
    assert out.sum() == 64 and out[0, 0, 0, 0] == 0


def test_dictionary_wrapper_and_alias():
    mask, expected = _shell_case()
    data = {"pred": torch.as_tensor(mask[None].astype(np.uint8)), "image": "untouched"}
    out = pp.CranialCavityPostprocessD(keys="pred", fill_holes_2d=True)(data)
    assert pp.CranialCavityPostprocessD is pp.CranialCavityPostprocessDict is CranialCavityPostprocessd
    np.testing.assert_array_equal(out["pred"][0].numpy().astype(bool), expected)
    assert out["image"] == "untouched"
    assert data["pred"][0, 17, 17, 13] == 1, "the input dictionary's array is not modified"


@pytest.mark.parametrize("kwargs", [{"connectivity": 0}, {"connectivity": 4}, {"threshold": float("nan")}])
def test_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        CranialCavityPostprocess(**kwargs)


@pytest.mark.parametrize("shape", [(2, 4, 4, 4), (4, 4, 4), (1, 1, 4, 4, 4)])
def test_bad_shapes(shape):
    with pytest.raises(ValueError, match="one-channel"):
        CranialCavityPostprocess()(np.ones(shape))


def test_axial_filling_needs_3d():
    with pytest.raises(ValueError, match="3D"):
        CranialCavityPostprocess(fill_holes_2d=True)(np.ones((1, 4, 4)))
    out = CranialCavityPostprocess()(np.ones((1, 4, 4)))  # 2D without axial filling works
    assert out.sum() == 16


@pytest.mark.parametrize(
    "affine_or_spacing, expected_ml",
    [
        ((1.0, 1.0, 1.0), 1.0),
        ((0.5, 0.5, 5.0), 1.25),
        (np.diag([2.0, 2.0, 2.0, 1.0]), 8.0),
        # a gantry-tilted (sheared) grid: the voxel volume is the determinant, not the product of column lengths
        (np.array([[1, 0, 0, 0], [0, 1, 0.5, 0], [0, 0, 2, 0], [0, 0, 0, 1]], float), 2.0),
    ],
)
def test_intracranial_volume_ml(affine_or_spacing, expected_ml):
    mask = np.zeros((20, 20, 20), np.uint8)
    mask[:10, :10, :10] = 1
    assert intracranial_volume_ml(mask, affine_or_spacing) == pytest.approx(expected_ml)
    assert intracranial_volume_ml(torch.as_tensor(mask[None]), affine_or_spacing) == pytest.approx(expected_ml)


def test_intracranial_volume_from_metatensor_and_errors():
    mask = MetaTensor(torch.ones(1, 10, 10, 10), affine=torch.diag(torch.tensor([1.0, 1.0, 3.0, 1.0])))
    assert intracranial_volume_ml(mask) == pytest.approx(3.0)
    with pytest.raises(ValueError, match="affine_or_spacing is required"):
        intracranial_volume_ml(np.ones((2, 2, 2)))
    with pytest.raises(ValueError, match="positive"):
        intracranial_volume_ml(np.ones((2, 2, 2)), (1.0, -1.0, 1.0))
    with pytest.raises(ValueError, match="shape"):
        intracranial_volume_ml(np.ones((2, 2, 2)), (1.0, 1.0))
    with pytest.raises(ValueError, match=r"\(X, Y, Z\)"):
        intracranial_volume_ml(np.ones((2, 2)), (1.0, 1.0, 1.0))


@pytest.mark.parametrize("channels", [1, 2, 3, 5])
@pytest.mark.parametrize("kind", ["tensor", "metatensor", "numpy"])
def test_channel_argmax_equals_monai_argmax(channels, kind):
    from monai.transforms import AsDiscrete

    from bundle.postprocessing import ChannelArgmax

    generator = torch.Generator().manual_seed(channels)
    probabilities = torch.randint(0, 4, (channels, 6, 7, 5), generator=generator).float()  # many ties
    if kind == "metatensor":
        probabilities = MetaTensor(probabilities, affine=torch.diag(torch.tensor([0.5, 0.5, 2.0, 1.0])))
    elif kind == "numpy":
        probabilities = probabilities.numpy()
    ours = ChannelArgmax()(probabilities)
    reference = AsDiscrete(argmax=True)(probabilities)
    assert type(ours) is type(probabilities)  # MONAI's returns a MetaTensor for every input; ours keeps the type
    assert ours.shape == (1, 6, 7, 5) and str(ours.dtype).endswith("float32")
    np.testing.assert_array_equal(convert_to_numpy(ours), convert_to_numpy(reference))
    if kind == "metatensor":
        torch.testing.assert_close(ours.affine, probabilities.affine)


def test_channel_argmax_dictionary_and_bad_input():
    from bundle.postprocessing import ChannelArgmax, ChannelArgmaxd, ChannelArgmaxDict

    data = {"pred": torch.tensor([[[0.9, 0.2]], [[0.1, 0.8]]]), "other": 1}
    out = ChannelArgmaxd(keys="pred")(data)
    assert out["pred"].tolist() == [[[0.0, 1.0]]] and out["other"] == 1 and data["pred"].shape == (2, 1, 2)
    assert ChannelArgmaxDict is ChannelArgmaxd
    with pytest.raises(ValueError, match="channel"):
        ChannelArgmax()(torch.zeros(0, 4, 4))
