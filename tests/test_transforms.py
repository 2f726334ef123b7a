# SPDX-License-Identifier: Apache-2.0
"""Preprocessing transforms: z-score normalisation with training-set statistics and in-plane resampling."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import Compose

import bundle.transforms
from bundle.transforms import (
    RandRotateTranslated,
    ResampleInPlane,
    ResampleInPlaned,
    ZScoreNormalize,
    ZScoreNormalized,
    load_intensity_stats,
)


def meta_volume(shape=(1, 32, 24, 10), spacing=(0.5, 0.5, 3.0), seed=0):
    data = torch.from_numpy(np.random.default_rng(seed).normal(0, 100, size=shape).astype(np.float32))
    return MetaTensor(data, affine=torch.diag(torch.tensor([*spacing, 1.0], dtype=torch.float64)))


# --------------------------------------------------------------------------------------------------------------------
# z-score
# --------------------------------------------------------------------------------------------------------------------

INPUT_TYPES = [np.asarray, torch.as_tensor, lambda a: MetaTensor(torch.as_tensor(a))]


@pytest.mark.parametrize("to_type", INPUT_TYPES)
def test_zscore_values_and_types(to_type):
    img = to_type(np.array([[-1024.0, 0.0, 40.0, 1000.0]], dtype=np.float32))
    out = ZScoreNormalize(mean=-500.0, std=400.0)(img)
    assert type(out) is type(img)
    np.testing.assert_allclose(np.asarray(out), [[-1.31, 1.25, 1.35, 3.75]], rtol=1e-6)
    assert np.asarray(out).dtype == np.float32
    np.testing.assert_array_equal(np.asarray(img), [[-1024.0, 0.0, 40.0, 1000.0]])  # input unchanged


def test_zscore_is_monai_normalize_intensity():
    """The library's arithmetic with fixed statistics: same values as the formula, metadata kept."""
    from monai.transforms import NormalizeIntensity

    rng = np.random.default_rng(0)
    hu = rng.uniform(-1024, 3000, size=(1, 64, 48, 20)).astype(np.float32)
    z = ZScoreNormalize(mean=-512.5, std=431.25)
    assert isinstance(z, NormalizeIntensity)
    expected = (hu - np.float32(-512.5)) / np.float32(431.25)
    np.testing.assert_array_equal(z(hu), expected)
    np.testing.assert_array_equal(z(torch.as_tensor(hu)).numpy(), expected)
    image = MetaTensor(torch.as_tensor(hu), affine=torch.diag(torch.tensor([0.5, 0.5, 5.0, 1.0])))
    out = z(image)
    assert isinstance(out, MetaTensor) and torch.equal(out.affine, image.affine)
    np.testing.assert_array_equal(out.numpy(), NormalizeIntensity(subtrahend=-512.5, divisor=431.25)(image).numpy())


def test_zscore_from_stats_file_and_dict(tmp_path):
    path = tmp_path / "stats.json"
    path.write_text(json.dumps({"mean": -600.0, "std": 300.0, "num_voxels": 10, "num_cases": 1}))
    assert load_intensity_stats(path) == (-600.0, 300.0)
    data = {"image": torch.tensor([[-600.0, -300.0]]), "label": torch.tensor([[0, 1]], dtype=torch.uint8)}
    out = ZScoreNormalized("image", stats_file=path)(data)
    torch.testing.assert_close(out["image"], torch.tensor([[0.0, 1.0]]))
    assert out["label"] is data["label"]
    assert bundle.transforms.ZScoreNormalizeD is bundle.transforms.ZScoreNormalizeDict is ZScoreNormalized


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({}, "mean and std"),
        ({"mean": 0.0}, "mean and std"),
        ({"mean": 0.0, "std": 0.0}, "std"),
        ({"mean": float("nan"), "std": 1.0}, "mean"),
        ({"mean": 0.0, "std": 1.0, "stats_file": "x.json"}, "not both"),
        ({"stats_file": "does/not/exist.json"}, "does not exist"),
    ],
)
def test_zscore_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ZScoreNormalize(**kwargs)


def test_zscore_bad_stats_file(tmp_path):
    (tmp_path / "bad.json").write_text("{not json")
    (tmp_path / "empty.json").write_text("{}")
    with pytest.raises(ValueError, match="not valid JSON"):
        ZScoreNormalize(stats_file=tmp_path / "bad.json")
    with pytest.raises(ValueError, match="'mean' and 'std'"):
        ZScoreNormalize(stats_file=tmp_path / "empty.json")


# --------------------------------------------------------------------------------------------------------------------
# in-plane resampling
# --------------------------------------------------------------------------------------------------------------------

RESAMPLE_CASES = [
    # kwargs, input spatial shape, spacing, expected spatial shape
    ({"spatial_size": (16, 12)}, (32, 24, 10), (0.5, 0.5, 3.0), (16, 12, 10)),
    ({"spatial_size": 8}, (32, 24, 10), (0.5, 0.5, 3.0), (8, 8, 10)),
    ({"pixdim": (1.0, 1.0)}, (32, 24, 10), (0.5, 0.5, 3.0), (16, 12, 10)),
    ({"pixdim": 0.75}, (30, 24, 7), (0.5, 0.5, 3.0), (20, 16, 7)),
]


@pytest.mark.parametrize("kwargs,shape,spacing,expected", RESAMPLE_CASES)
def test_resample_in_plane_shapes_and_affine(kwargs, shape, spacing, expected):
    img = meta_volume((1, *shape), spacing)
    out = ResampleInPlane(**kwargs)(img)
    assert tuple(out.shape[1:]) == expected
    new_spacing = np.linalg.norm(out.affine.numpy()[:3, :3], axis=0)
    np.testing.assert_allclose(new_spacing[:2], np.array(spacing[:2]) * np.array(shape[:2]) / np.array(expected[:2]))
    assert new_spacing[2] == pytest.approx(spacing[2])
    # the field of view is kept: the first and last voxel edges stay where they were
    fov = np.array(shape[:2]) * np.array(spacing[:2])
    np.testing.assert_allclose(new_spacing[:2] * np.array(expected[:2]), fov)


@pytest.mark.parametrize(
    "shape,size", [((2, 64, 48, 6), (16, 20)), ((1, 30, 30, 4), (30, 10)), ((1, 12, 12, 3), (20, 24))]
)
def test_resample_in_plane_equals_monai_resize_with_anti_aliasing(shape, size):
    """The fast in-plane anti-aliasing gives MONAI's Resize(anti_aliasing=True) values, affine and inverse."""
    from monai.transforms import Resize

    from bundle.transforms.spatial import gaussian_smooth_axes

    img = meta_volume(shape, (0.5, 0.7, 3.0))
    resample = ResampleInPlane(spatial_size=size)
    ours = resample(img)
    reference = Resize(spatial_size=(*size, shape[-1]), mode="trilinear", anti_aliasing=True)(img)
    torch.testing.assert_close(ours.as_tensor(), reference.as_tensor(), rtol=1e-5, atol=1e-4 * img.abs().max().item())
    torch.testing.assert_close(ours.affine, reference.affine)
    back = resample.inverse(ours)
    assert back.shape == img.shape
    torch.testing.assert_close(back.affine, img.affine)
    with pytest.raises(ValueError, match="sigmas"):
        gaussian_smooth_axes(img.as_tensor(), (1.0, 1.0))


def test_resample_in_plane_keeps_z_values():
    """Z is not interpolated: a volume constant in-plane is unchanged slice by slice."""
    z_profile = torch.linspace(-1000, 1000, 10)
    img = MetaTensor(z_profile.expand(1, 32, 24, 10).clone(), affine=torch.eye(4, dtype=torch.float64))
    out = ResampleInPlane(spatial_size=(8, 6))(img)
    torch.testing.assert_close(out[0, 3, 2].as_tensor(), z_profile, rtol=1e-4, atol=0.05)


@pytest.mark.parametrize(
    "spacing,shape,expected",
    [((0.5, 0.5, 0.625), (40, 36, 64), (10, 9, 10)), ((0.45, 0.45, 7.0), (44, 40, 6), (10, 9, 10))],
)
def test_resample_to_physical_grid_and_back(spacing, shape, expected):
    """pixdim (2, 2, 4): thin and thick slices reach the same physical grid; the inverse restores native geometry."""
    img = meta_volume((1, *shape), spacing)
    resample = ResampleInPlane(pixdim=(2.0, 2.0, 4.0))
    out = resample(img)
    assert tuple(out.shape[1:]) == expected
    new_spacing = np.linalg.norm(out.affine.numpy()[:3, :3], axis=0)
    np.testing.assert_allclose(new_spacing * np.array(expected), np.array(spacing) * np.array(shape))  # same extent
    np.testing.assert_allclose(new_spacing, (2.0, 2.0, 4.0), rtol=0.25)
    back = resample.inverse(out)
    assert back.shape == img.shape
    torch.testing.assert_close(back.affine, img.affine)


def test_resample_z_anti_aliasing_smooths_thin_slices():
    """Downsampling 0.625 mm slices to 4 mm averages them (noise drops), as a thick slice would."""
    torch.manual_seed(0)
    img = MetaTensor(
        torch.randn(1, 8, 8, 64), affine=torch.diag(torch.tensor([2.0, 2.0, 0.625, 1.0], dtype=torch.float64))
    )
    out = ResampleInPlane(pixdim=(2.0, 2.0, 4.0))(img)
    assert out.shape[-1] == 10
    assert out.std().item() < 0.6 * img.std().item()


def test_resample_in_plane_dict_label_nearest_and_inverse():
    img = meta_volume((1, 32, 24, 10))
    label = MetaTensor((img.as_tensor() > 50).to(torch.uint8), affine=img.affine.clone())
    xform = ResampleInPlaned(["image", "label"], pixdim=(1.0, 1.0))
    out = xform({"image": img, "label": label})
    assert set(torch.unique(out["label"]).tolist()) <= {0, 1}
    assert out["image"].shape == out["label"].shape == (1, 16, 12, 10)
    back = xform.inverse(out)
    assert back["image"].shape == img.shape and back["label"].shape == label.shape
    torch.testing.assert_close(back["image"].affine, img.affine)


@pytest.mark.parametrize(
    "kwargs", [{}, {"spatial_size": (8, 8), "pixdim": 1.0}, {"spatial_size": (0, 8)}, {"pixdim": (-1.0, 1.0)}]
)
def test_resample_in_plane_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        ResampleInPlane(**kwargs)


def test_resample_in_plane_pixdim_needs_metadata():
    with pytest.raises(ValueError, match="MetaTensor"):
        ResampleInPlane(pixdim=1.0)(torch.zeros(1, 8, 8, 4))


# --------------------------------------------------------------------------------------------------------------------
# every dictionary transform on every input type leaves its input unchanged
# --------------------------------------------------------------------------------------------------------------------

DICT_TRANSFORMS = [
    lambda: ZScoreNormalized("image", mean=-500.0, std=500.0),
    lambda: ResampleInPlaned(["image", "label"], spatial_size=(16, 12)),
    lambda: RandRotateTranslated(["image", "label"], max_translation_vox=3.0).set_random_state(seed=1),
]


@pytest.mark.parametrize("make", DICT_TRANSFORMS)
@pytest.mark.parametrize("kind", ["numpy", "tensor", "meta"])
def test_dict_transforms_leave_inputs_unchanged(make, kind):
    img = meta_volume((1, 32, 24, 10))
    label = (img.as_tensor() > 0).to(torch.uint8)
    if kind == "numpy":
        data = {"image": img.numpy().copy(), "label": label.numpy().copy()}
    elif kind == "tensor":
        data = {"image": img.as_tensor().clone(), "label": label.clone()}
    else:
        data = {"image": img.clone(), "label": MetaTensor(label.clone(), affine=img.affine.clone())}
    before = {k: np.asarray(v).copy() for k, v in data.items()}
    out = Compose([make()])(data)
    for key, value in before.items():
        np.testing.assert_array_equal(np.asarray(data[key]), value)
    assert out["label"].shape[1:] == out["image"].shape[1:]
