# SPDX-License-Identifier: Apache-2.0
"""Stage-1 sampling: one axial slice of a randomly rotated and translated volume, at the cost of one slice.

The paper trains its 2D U-Net on "randomly picked slices, one slice per batch", with the same augmentation as
stage 2 (random rotations of +-10 degrees about every axis and translations of +-20 voxels per axis). Rotating a
whole volume to keep one of its slices wastes almost all of the work, so :class:`RandAxialSliced` draws the slice
index and the rotation/translation (the convention of
:func:`bundle.transforms.augmentation.rotation_translation_matrix`, physical when the volume is a ``MetaTensor`` with
an affine) and samples only that output plane with one
``grid_sample``: the result is the slice the full-volume augmentation would have produced (up to interpolation),
in a few milliseconds instead of a second.

:class:`AxialSlice` is the deterministic part: slice ``index`` of the last axis of ``(C, X, Y, Z)``, as ``(C, X, Y)``.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from monai.config import KeysCollection, NdarrayOrTensor
from monai.data import MetaTensor
from monai.transforms import MapTransform, RandomizableTransform, Transform
from monai.utils import TransformBackends, ensure_tuple_rep

from bundle.transforms.augmentation import RandRotateTranslate, RotateTranslate

__all__ = ["AxialSlice", "sample_axial_plane", "RandAxialSliced", "RandAxialSliceD", "RandAxialSliceDict"]

_MODES = ("bilinear", "binary", "nearest")
_PADDING = ("border", "zeros")


def _check_volume(img: NdarrayOrTensor, name: str) -> None:
    if img.ndim != 4:
        raise ValueError(f"{name} expects a channel-first volume (C, X, Y, Z), got shape {tuple(img.shape)}.")


class AxialSlice(Transform):
    """Take one slice of the last axis of a channel-first volume.

    Args:
        index: slice index along the last axis (negative counts from the end). Defaults to 0.

    Raises:
        ValueError: for a non-integer ``index``; on call, for an input that is not ``(C, X, Y, Z)`` or an index out
            of range.

    Example:
        >>> AxialSlice(index=3)(torch.zeros(1, 64, 64, 24)).shape
        torch.Size([1, 64, 64])
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(self, index: int = 0) -> None:
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
            raise ValueError(f"index must be an integer, got {index!r}.")
        self.index = int(index)

    def __call__(self, img: NdarrayOrTensor, index: int | None = None) -> NdarrayOrTensor:
        """Return slice ``index`` (default: the one given at construction) as ``(C, X, Y)``.

        A MetaTensor comes back as a plain tensor: its 3D affine does not describe a 2D slice.
        """
        index = self.index if index is None else int(index)
        _check_volume(img, "AxialSlice")
        depth = img.shape[-1]
        if not -depth <= index < depth:
            raise ValueError(f"AxialSlice: index {index} is out of range for {depth} slices.")
        out = img[..., index]
        if isinstance(out, MetaTensor):
            out = out.as_tensor()
        return out.clone() if isinstance(out, torch.Tensor) else np.ascontiguousarray(out)


def sample_axial_plane(
    img: torch.Tensor, matrix: np.ndarray, index: int, mode: str = "bilinear", padding_mode: str = "border"
) -> torch.Tensor:
    """Output plane ``index`` of the volume resampled through ``matrix``, without resampling the other planes.

    ``out[c, i, j] = img[c](matrix @ (i, j, index, 1))`` with trilinear (or nearest) interpolation, i.e. slice
    ``index`` of ``RotateTranslate``'s output for the same output-index -> source-index ``matrix``.

    Args:
        img: ``(C, X, Y, Z)`` tensor.
        matrix: 4x4 output-index -> source-index map (e.g. from ``rotation_translation_matrix``).
        index: output slice index along the last axis.
        mode: "bilinear" (images), "binary" (0/1 masks: linear, then >= 0.5) or "nearest". Defaults to "bilinear".
        padding_mode: "border" or "zeros" for samples outside the volume. Defaults to "border".

    Returns:
        ``(C, X, Y)`` with ``img``'s dtype (a plain tensor).

    Raises:
        ValueError: for a bad shape, ``mode`` or ``padding_mode``.

    Example:
        >>> sample_axial_plane(torch.rand(1, 32, 32, 8), np.eye(4), 3).shape
        torch.Size([1, 32, 32])
    """
    _check_volume(img, "sample_axial_plane")
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {_MODES}, got {mode!r}.")
    if padding_mode not in _PADDING:
        raise ValueError(f"padding_mode must be one of {_PADDING}, got {padding_mode!r}.")
    data = img.as_tensor() if isinstance(img, MetaTensor) else img
    nx, ny, nz = data.shape[1:]
    ii, jj = torch.meshgrid(torch.arange(nx, dtype=torch.float64), torch.arange(ny, dtype=torch.float64), indexing="ij")
    points = torch.stack([ii, jj, torch.full_like(ii, float(index)), torch.ones_like(ii)]).reshape(4, -1)
    src = (torch.as_tensor(np.asarray(matrix, dtype=np.float64)[:3]) @ points).reshape(3, nx, ny)
    # grid_sample on (N, C, D=X, H=Y, W=Z): the last grid coordinate indexes X, the first Z; align_corners=True
    normalised = [2.0 * src[a] / max(n - 1, 1) - 1.0 for a, n in enumerate((nx, ny, nz))]
    grid = torch.stack(normalised[::-1], dim=-1)[None, None].to(torch.float32)
    source = data.to(torch.float32)[None]
    out = F.grid_sample(
        source,
        grid.to(source.device),
        mode="nearest" if mode == "nearest" else "bilinear",
        padding_mode=padding_mode,
        align_corners=True,
    )[0, :, 0]
    if mode == "binary":
        return (out >= 0.5).to(data.dtype)
    if data.is_floating_point():
        return out.to(data.dtype)
    return out.round().to(data.dtype)


class RandAxialSliced(RandomizableTransform, MapTransform):
    """Pick one axial slice at random from the randomly rotated and translated volume, the same for every key.

    Per call: a slice index uniform over the last axis; with probability ``prob`` also rotation angles uniform in
    ``[-max_rotation_deg, max_rotation_deg]`` about each axis and shifts uniform in
    ``[-max_translation_vox, max_translation_vox]`` along each axis (as ``bundle.transforms.RandRotateTranslated``
    draws them); then only that output plane is sampled (:func:`sample_axial_plane`). Outputs are plain tensors
    ``(C, X, Y)``.

    Args:
        keys: keys of the channel-first volumes, e.g. ``["image", "label"]``; they must have the same shape.
        prob: probability of augmenting. Defaults to 1.0.
        max_rotation_deg: largest rotation about each axis (one number or three). Defaults to 10.0.
        max_translation_vox: largest shift along each axis in voxels (one number or three). Defaults to 20.0.
        mode: per key, "bilinear", "binary" (0/1 masks) or "nearest". Defaults to ``("bilinear", "binary")``, as
            :py:class:`bundle.transforms.RandRotateTranslated` in stage 2.
        padding_mode: per key, "border" or "zeros". Defaults to ``("border", "zeros")``.
        physical: rotate in millimetres using a ``MetaTensor``'s voxel spacing. Defaults to True.
        allow_missing_keys: don't raise if a key is missing. Defaults to False.

    Raises:
        ValueError: for negative ranges, bad modes; on call, if the keys' volumes differ in shape or are not 4D.

    Example:
        >>> pick = RandAxialSliced(keys=["image", "label"]).set_random_state(seed=0)
        >>> out = pick({"image": torch.rand(1, 64, 64, 24), "label": torch.zeros(1, 64, 64, 24, dtype=torch.uint8)})
        >>> out["image"].shape, out["label"].dtype
        (torch.Size([1, 64, 64]), torch.uint8)
    """

    backend = [TransformBackends.TORCH]

    def __init__(
        self,
        keys: KeysCollection,
        prob: float = 1.0,
        max_rotation_deg: Sequence[float] | float = 10.0,
        max_translation_vox: Sequence[float] | float = 20.0,
        mode: Sequence[str] | str = ("bilinear", "binary"),
        padding_mode: Sequence[str] | str = ("border", "zeros"),
        physical: bool = True,
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob)
        # the rotation and translation are drawn (and their ranges checked) as in stage 2's augmentation
        self.rotation = RandRotateTranslate(
            prob=1.0,
            max_rotation_deg=max_rotation_deg,
            max_translation_vox=max_translation_vox,
            physical=physical,
            cache_buffers=False,
        )
        self.mode = ensure_tuple_rep(mode, len(self.keys))
        self.padding_mode = ensure_tuple_rep(padding_mode, len(self.keys))
        for name, values, options in (("mode", self.mode, _MODES), ("padding_mode", self.padding_mode, _PADDING)):
            bad = [v for v in values if v not in options]
            if bad:
                raise ValueError(f"{name} must be one of {options} per key, got {list(values)}.")
        self.slicer = AxialSlice()
        self.index = 0

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None):
        super().set_random_state(seed, state)
        self.rotation.set_random_state(seed, state)
        return self

    @property
    def angles_deg(self) -> tuple[float, float, float]:
        """The last drawn rotation angles (degrees)."""
        return self.rotation.angles_deg

    @property
    def translation_vox(self) -> tuple[float, float, float]:
        """The last drawn shifts (voxels)."""
        return self.rotation.translation_vox

    def randomize(self, depth: int) -> None:  # type: ignore[override]
        """Draw the slice index and, with probability ``prob``, the rotation and translation."""
        super().randomize(None)
        self.index = int(self.R.randint(depth))
        if self._do_transform:
            self.rotation.randomize()

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        shapes = {key: tuple(d[key].shape) for key in self.key_iterator(d)}
        if not shapes:
            return d
        if len(set(shapes.values())) != 1:
            raise ValueError(f"RandAxialSliced: the keys' volumes differ in shape: {shapes}.")
        first = d[next(iter(shapes))]
        _check_volume(first, "RandAxialSliced")
        self.randomize(first.shape[-1])
        matrix = None
        if self._do_transform:
            matrix = RotateTranslate(self.angles_deg, self.translation_vox, physical=self.rotation.physical).matrix(
                first
            )
        for key, mode, padding_mode in self.key_iterator(d, self.mode, self.padding_mode):
            img = d[key]
            if matrix is None:
                d[key] = self.slicer(img, self.index)
            else:
                tensor = torch.as_tensor(img) if isinstance(img, np.ndarray) else img
                d[key] = sample_axial_plane(tensor, matrix, self.index, mode, padding_mode)
        return d


RandAxialSliceD = RandAxialSliceDict = RandAxialSliced
