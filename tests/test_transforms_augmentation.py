# SPDX-License-Identifier: Apache-2.0
"""The separable rotate/translate augmentation against MONAI's Affine, and its random dictionary wrapper."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import Affine
from scipy import ndimage

import bundle.transforms
from bundle.transforms import (
    RandRotateTranslate,
    RandRotateTranslated,
    RotateTranslate,
    nearest_affine,
    rotation_translation_matrix,
    separable_affine,
)


def smooth_field(shape, seed=0):
    """A smooth random volume (std about 3), like CT texture at a coarse scale."""
    rng = np.random.default_rng(seed)
    return torch.from_numpy((ndimage.gaussian_filter(rng.normal(size=shape), 3) * 100).astype(np.float32))


def ellipsoid(shape, radii):
    grid = np.meshgrid(*[np.arange(n) - n / 2 for n in shape], indexing="ij")
    return sum((g / r) ** 2 for g, r in zip(grid, radii, strict=True)) < 1


def monai_affine(volume: torch.Tensor, matrix: np.ndarray, mode: str, padding_mode: str) -> torch.Tensor:
    """MONAI's Affine with the same output -> source map (MONAI's matrix acts on centred coordinates)."""
    centre = np.eye(4)
    centre[:3, 3] = (np.asarray(volume.shape) - 1) / 2
    centred = np.linalg.inv(centre) @ matrix @ centre
    xform = Affine(affine=torch.as_tensor(centred), mode=mode, padding_mode=padding_mode, image_only=True)
    return xform(volume[None].float())[0]


def dice(a, b):
    return 2 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


IMAGE_CASES = [
    # angles (deg), translation (voxels), spacing (None: voxel space), padding
    ((0, 0, 10), (0, 0, 0), None, "border"),
    ((8, -9, 10), (5, -12, 3), None, "border"),
    ((-10, 10, -10), (20, -20, 10), None, "zeros"),
    ((7, 5, -9), (3, 3, 3), (0.5, 0.5, 2.0), "border"),
]


@pytest.mark.parametrize("angles,translation,spacing,padding", IMAGE_CASES)
def test_image_matches_monai_affine(angles, translation, spacing, padding):
    shape = (64, 72, 40)
    volume = smooth_field(shape)
    matrix = rotation_translation_matrix(shape, angles, translation, spacing)
    ours = separable_affine(volume, matrix, padding).numpy()
    reference = monai_affine(volume, matrix, "bilinear", padding).numpy()
    inner = (slice(8, -8),) * 3  # the separable passes clip intermediate images: compare away from the borders
    error = np.abs(ours - reference)[inner].mean()
    change = np.abs(volume.numpy() - reference)[inner].mean()
    assert error < 0.03 * volume.std().item()
    assert error < 0.05 * change  # the error is small against what the transform does
    assert np.abs(ours - reference).mean() < 0.15 * volume.std().item()


@pytest.mark.parametrize("angles,translation", [((6, -8, 9), (12, -15, 6)), ((-10, 4, -7), (-20, 8, -10))])
def test_binary_label_matches_monai_nearest(angles, translation):
    shape = (144, 144, 96)
    radii = (36, 42, 24)
    label = torch.from_numpy(ellipsoid(shape, radii).astype(np.uint8))
    matrix = rotation_translation_matrix(shape, angles, translation)
    out = RotateTranslate(angles, translation, mode="binary", padding_mode="zeros")(label[None])[0]
    assert out.dtype == torch.uint8 and set(torch.unique(out).tolist()) <= {0, 1}
    reference = monai_affine(label, matrix, "nearest", "zeros").numpy() > 0.5
    ours = out.numpy() > 0
    assert dice(ours, reference) > 0.99
    # against the exactly moved ellipsoid (sampled at the output voxel centres) ours is at least as close as MONAI's
    index = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1).reshape(-1, 3)
    source = index @ matrix[:3, :3].T + matrix[:3, 3] - np.array(shape) / 2
    exact = ((source / np.array(radii)) ** 2).sum(-1).reshape(shape) < 1
    assert dice(ours, exact) >= dice(reference, exact)


def reference_nearest(volume: np.ndarray, matrix: np.ndarray, padding_mode: str) -> np.ndarray:
    """``volume[round(matrix @ p)]`` for every output voxel ``p``, in float64 over a full coordinate grid."""
    index = np.stack(np.meshgrid(*[np.arange(n) for n in volume.shape], indexing="ij"), -1).reshape(-1, 3)
    source = np.floor(index @ matrix[:3, :3].T + matrix[:3, 3] + 0.5).astype(np.int64)
    inside = np.all((source >= 0) & (source < volume.shape), axis=1)
    source = np.clip(source, 0, np.array(volume.shape) - 1)
    out = volume[source[:, 0], source[:, 1], source[:, 2]]
    if padding_mode == "zeros":
        out = np.where(inside, out, 0)
    return out.reshape(volume.shape)


@pytest.mark.parametrize("padding", ["border", "zeros"])
@pytest.mark.parametrize("dtype", [torch.uint8, torch.int16, torch.float32, torch.bool])
def test_nearest_affine_is_one_nearest_lookup(padding, dtype):
    shape = (40, 36, 24)
    volume = (smooth_field(shape, seed=2) / 20).round().to(dtype)
    matrix = rotation_translation_matrix(shape, (9, -7, 6), (5, -12, 3), (0.5, 0.5, 2.0))
    out = nearest_affine(volume, matrix, padding)
    expected = reference_nearest(volume.numpy(), matrix, padding)
    assert out.dtype == dtype and out.shape == volume.shape
    # float32 coordinates against float64: only exact ties between two voxels may round the other way
    assert np.mean(out.numpy() != expected) < 1e-4
    if padding == "zeros":
        assert not np.any(out.numpy()[reference_nearest(np.ones(shape, np.uint8), matrix, "zeros") == 0])


@pytest.mark.parametrize("padding", ["border", "zeros"])
def test_nearest_mode_keeps_label_values_and_matches_monai(padding):
    shape = (64, 64, 40)
    label = np.zeros(shape, np.uint8)
    label[ellipsoid(shape, (20, 22, 14))] = 1
    label[ellipsoid(shape, (8, 9, 6))] = 3
    angles, translation = (5, -7, 8), (4, -6, 2)
    out = RotateTranslate(angles, translation, mode="nearest", padding_mode=padding)(torch.from_numpy(label)[None])[0]
    assert set(torch.unique(out).tolist()) == {0, 1, 3}
    reference = monai_affine(
        torch.from_numpy(label), rotation_translation_matrix(shape, angles, translation), "nearest", padding
    ).numpy()
    assert np.mean(out.numpy() != reference) < 1e-4  # one 3D lookup, as MONAI's (ties aside)
    assert dice(out.numpy() == 3, reference == 3) > 0.999


@pytest.mark.parametrize("resample", [separable_affine, nearest_affine])
@pytest.mark.parametrize("padding", ["border", "zeros"])
def test_identity_and_integer_translation_are_exact(resample, padding):
    volume = smooth_field((20, 18, 12))
    same = resample(volume, np.eye(4), padding)
    torch.testing.assert_close(same, volume)
    shifted = resample(volume, rotation_translation_matrix(volume.shape, (0, 0, 0), (3, -2, 1)), padding)
    torch.testing.assert_close(shifted[3:, :-2, 1:], volume[:-3, 2:, :-1])
    if padding == "zeros":
        assert torch.all(shifted[:3] == 0) and torch.all(shifted[:, -2:] == 0)
    else:
        torch.testing.assert_close(shifted[:3, :-2, 1:], volume[:1, 2:, :-1].expand(3, -1, -1))


def test_metatensor_affine_keeps_world_coordinates():
    volume = torch.zeros(1, 40, 40, 24)
    volume[0, 25, 12, 15] = 1000.0
    affine = torch.tensor([[0.8, 0, 0, -10], [0, 0.8, 0, 5], [0, 0, 2.0, 30], [0, 0, 0, 1]], dtype=torch.float64)
    img = MetaTensor(volume, affine=affine)
    out = RotateTranslate((6, -4, 9), (3, -2, 1), mode="bilinear", padding_mode="zeros")(img)
    assert isinstance(out, MetaTensor)
    peak = np.unravel_index(int(torch.argmax(out)), out.shape[1:])
    world_in = affine.numpy() @ np.array([25, 12, 15, 1.0])
    world_out = out.affine.numpy() @ np.array([*peak, 1.0])
    # the content moved in voxel space; the affine moved with it (within a voxel: the peak is interpolated)
    assert np.linalg.norm(world_out[:3] - world_in[:3]) < 2.0
    assert peak != (25, 12, 15)


def test_physical_rotation_uses_spacing():
    """With 0.5 x 0.5 x 2 mm voxels a physical rotation differs from the voxel-space one."""
    img = MetaTensor(smooth_field((32, 32, 16))[None], affine=torch.diag(torch.tensor([0.5, 0.5, 2.0, 1.0])).double())
    physical = RotateTranslate((10, 0, 0), physical=True)
    voxel = RotateTranslate((10, 0, 0), physical=False)
    np.testing.assert_allclose(
        physical.matrix(img), rotation_translation_matrix((32, 32, 16), (10, 0, 0), (0, 0, 0), (0.5, 0.5, 2.0))
    )
    assert not np.allclose(physical.matrix(img), voxel.matrix(img))


def test_random_dict_applies_one_draw_to_all_keys():
    image = smooth_field((32, 28, 16))[None]
    label = (image > 0).to(torch.uint8)
    aug = RandRotateTranslated(["image", "label"]).set_random_state(seed=3)
    out = aug({"image": image, "label": label})
    angles, translation = aug.rand.angles_deg, aug.rand.translation_vox
    assert all(abs(a) <= 10 for a in angles) and all(abs(t) <= 20 for t in translation)
    torch.testing.assert_close(out["image"], RotateTranslate(angles, translation)(image))
    expected_label = RotateTranslate(angles, translation, mode="binary", padding_mode="zeros")(label)
    torch.testing.assert_close(out["label"], expected_label)
    assert bundle.transforms.RandRotateTranslateD is bundle.transforms.RandRotateTranslateDict is RandRotateTranslated


def test_random_state_is_passed_on_and_reproducible():
    data = {"image": smooth_field((24, 24, 12))[None]}
    first = RandRotateTranslated("image").set_random_state(seed=7)(data)["image"]
    again = RandRotateTranslated("image").set_random_state(seed=7)(data)["image"]
    other = RandRotateTranslated("image").set_random_state(seed=8)(data)["image"]
    torch.testing.assert_close(first, again)
    assert not torch.allclose(first, other)


def test_parameters_cover_the_paper_ranges():
    aug = RandRotateTranslate().set_random_state(seed=0)
    draws = []
    for _ in range(400):
        aug.randomize()
        draws.append([*aug.angles_deg, *aug.translation_vox])
    draws = np.array(draws)
    assert np.all(np.abs(draws[:, :3]) <= 10) and np.all(np.abs(draws[:, 3:]) <= 20)
    assert np.all(np.abs(draws[:, :3]).max(0) > 9) and np.all(np.abs(draws[:, 3:]).max(0) > 18)


def test_prob_zero_returns_the_input():
    data = {"image": torch.zeros(1, 8, 8, 4)}
    assert RandRotateTranslated("image", prob=0.0)(data)["image"] is data["image"]


@pytest.mark.parametrize(
    "make",
    [
        lambda: RandRotateTranslate(max_rotation_deg=45),
        lambda: RandRotateTranslate(max_translation_vox=-1),
        lambda: RandRotateTranslate(mode="cubic"),
        lambda: RandRotateTranslated("image", padding_mode="reflection"),
        lambda: RotateTranslate((1, 2), (0, 0, 0)),
    ],
)
def test_bad_arguments(make):
    with pytest.raises(ValueError):
        make()


def test_bad_inputs():
    with pytest.raises(ValueError, match="binary"):
        RotateTranslate(mode="binary")(torch.full((1, 8, 8, 4), 2, dtype=torch.uint8))
    with pytest.raises(ValueError, match="too far from the identity"):
        separable_affine(torch.zeros(8, 8, 8), rotation_translation_matrix((8, 8, 8), (90, 0, 0), (0, 0, 0)))
    with pytest.raises(ValueError, match="3D"):
        separable_affine(torch.zeros(8, 8), np.eye(4))
    with pytest.raises(ValueError, match="3D"):
        nearest_affine(torch.zeros(8, 8), np.eye(4))
    with pytest.raises(ValueError, match="matrix"):
        nearest_affine(torch.zeros(8, 8, 8), np.full((4, 4), np.nan))
    with pytest.raises(ValueError, match="padding_mode"):
        nearest_affine(torch.zeros(8, 8, 8), np.eye(4), "reflection")
    volume = torch.zeros(8, 8, 8)
    with pytest.raises(ValueError, match="out"):
        nearest_affine(volume, np.eye(4), out=volume)


FACTOR_CASES = [
    ((64, 72, 40), (8, -9, 10), (5, -12, 3), None),
    ((64, 72, 40), (-10, 10, -10), (20, -20, 20), None),
    ((512, 512, 40), (10, -10, 10), (0, 0, 0), (0.45, 0.45, 5.0)),  # thick slices: large shears in voxel units
]


@pytest.mark.parametrize("shape,angles,translation,spacing", FACTOR_CASES)
def test_pass_matrices_multiply_to_the_affine(shape, angles, translation, spacing):
    from bundle.transforms.augmentation import _pass_matrices

    matrix = rotation_translation_matrix(shape, angles, translation, spacing)
    product = np.linalg.multi_dot(_pass_matrices(matrix, shape))
    np.testing.assert_allclose(product, matrix, atol=1e-9)


@pytest.mark.parametrize("where,agreement", [("centre", 0.99), ("edge", 0.98)])
def test_label_box_is_as_good_as_the_whole_volume(where, agreement):
    """Binary labels with zero padding are moved inside a box around them (zero-padded beyond the volume's faces):
    as close to MONAI as moving the whole volume, and better where the mask touches the faces."""
    shape = (96, 80, 48)
    label = np.zeros(shape, np.uint8)
    if where == "centre":
        label[ellipsoid(shape, (20, 16, 10))] = 1
    else:
        label[:30, 50:, 30:] = 1  # touches three faces of the volume
    channel = torch.from_numpy(label)
    xform = RotateTranslate((7, -6, 9), (10, -8, 4), mode="binary", padding_mode="zeros", workspace={})
    matrix = xform.matrix(channel[None])
    boxed = xform(channel[None])[0].numpy() > 0
    whole = xform._label(channel, matrix).numpy() > 0  # all passes on the volume itself
    reference = monai_affine(channel, matrix, "bilinear", "zeros").numpy() >= 0.5
    assert dice(boxed, reference) > agreement
    assert dice(boxed, reference) >= dice(whole, reference) - 0.002
    assert int(xform(torch.zeros(1, *shape, dtype=torch.uint8)).sum()) == 0


def test_workspace_reuse_gives_identical_results():
    volume = smooth_field((40, 36, 20))
    matrix = rotation_translation_matrix(volume.shape, (4, -5, 6), (2, 3, -1))
    workspace = {}
    first = separable_affine(volume, matrix, workspace=workspace)
    separable_affine(smooth_field((20, 20, 10)), np.eye(4), workspace=workspace)  # a smaller volume in between
    second = separable_affine(volume, matrix, workspace=workspace)
    torch.testing.assert_close(first, separable_affine(volume, matrix))
    torch.testing.assert_close(second, first)
    assert first.data_ptr() != second.data_ptr()  # results are never the workspace


def test_benchmark_runs_on_a_small_volume(capsys):
    from scripts.benchmarks.augmentation import benchmark_augmentation

    threads = torch.get_num_threads()
    rows = benchmark_augmentation(size=(24, 24, 12), repeats=1, threads=1)
    assert torch.get_num_threads() == threads  # restored
    assert [r["method"] for r in rows][-1] == "MONAI RandAffined" and rows[0]["ratio"] == 1.0
    assert all(r["seconds"] > 0 and r["cpu_seconds"] >= 0 for r in rows)
    assert "MONAI RandAffined" in capsys.readouterr().out
    with pytest.raises(ValueError, match="size"):
        benchmark_augmentation(size=(8, 8))


@pytest.mark.parametrize("where", ["centre", "edge", "outside"])
def test_nearest_label_box_equals_the_whole_volume(where):
    """Nearest labels are looked up only where the mask can land, from a box around it (a view, or a zero-padded
    copy where the mask touches the volume's faces): the same result as the lookup over the whole volume."""
    shape = (96, 80, 48)
    label = np.zeros(shape, np.uint8)
    if where == "centre":
        label[ellipsoid(shape, (20, 16, 10))] = 2
    elif where == "edge":
        label[:30, 50:, 30:] = 1  # touches three faces of the volume
    else:
        label[:6, :6, :6] = 1  # moved out of the volume by the translation below
    xform = RotateTranslate((7, -6, 9), (10, 8, 4) if where != "outside" else (-20, -20, -10), "nearest", "zeros")
    channel = torch.from_numpy(label)
    boxed = xform(channel[None])[0]
    whole = nearest_affine(channel, xform.matrix(channel[None]), "zeros")
    assert np.mean(boxed.numpy() != whole.numpy()) < 1e-4
    assert (int(boxed.sum()) == 0) == (where == "outside")
