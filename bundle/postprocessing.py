# SPDX-License-Identifier: Apache-2.0
"""Post-processing of the network's output into the cranial-cavity mask, and the intracranial volume.

:class:`ChannelArgmax` turns the class probabilities into the label map exactly as MONAI's
``AsDiscrete(argmax=True)``, by a running comparison over the channels: torch's CPU ``argmax`` over a short leading
axis takes 13.7 s for a 2x512x512x278 volume on one core, the comparison 0.15 s.

The network's thresholded output can carry small islands (in the orbits, sinuses or scalp) and, rarely, holes
(in dense haemorrhage or calcifications). :class:`CranialCavityPostprocess` keeps the largest connected component
and fills enclosed holes in 3D, optionally also slice by slice in the axial planes (which also closes holes that are
open to the outside only through the foramen magnum or a craniectomy gap in 3D).

Why not MONAI's ``KeepLargestConnectedComponent`` and ``FillHoles``: the first needs scikit-image (not a dependency
of this bundle) and the second floods the background with ``binary_dilation(iterations=-1)``, one pass over the volume
per voxel of flood distance. Here both are one ``scipy.ndimage.label`` call on the mask's bounding box, with the same
results (the tests compare against ``FillHoles``). Measured on a 512x512x320 mask (2 shared CPU cores): largest
component 2.4 s (MONAI with scikit-image 3.2 s), 3D hole filling 0.8 s (MONAI ``FillHoles`` 7.6 s,
``scipy.ndimage.binary_fill_holes`` 4.9 s), axial filling 0.7 s; the whole transform on a float tensor 4.9 s.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection, NdarrayOrTensor
from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform
from monai.utils import TransformBackends
from monai.utils.type_conversion import convert_to_dst_type, convert_to_numpy
from scipy import ndimage

__all__ = [
    "ChannelArgmax",
    "ChannelArgmaxd",
    "ChannelArgmaxD",
    "ChannelArgmaxDict",
    "keep_largest_component",
    "fill_holes",
    "fill_holes_axial",
    "postprocess_cranial_cavity",
    "intracranial_volume_ml",
    "CranialCavityPostprocess",
    "CranialCavityPostprocessd",
    "CranialCavityPostprocessD",
    "CranialCavityPostprocessDict",
]

logger = logging.getLogger(__name__)


class ChannelArgmax(Transform):
    """Index of the largest channel of a channel-first array, kept as a one-channel array (float32 for tensors, like
    ``AsDiscrete(argmax=True)``); ties go to the first channel, as with ``argmax``. NaN never wins a comparison, so a
    NaN channel loses where ``argmax`` would pick it.

    Example:
        >>> probabilities = torch.tensor([[[0.2, 0.7]], [[0.8, 0.3]]])  # (2, 1, 2)
        >>> ChannelArgmax()(probabilities).tolist()
        [[[1.0, 0.0]]]
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        """Args:
            img: channel-first array ``(C, ...)``, ``C >= 1``.

        Returns:
            ``(1, ...)`` class indices, same type (``MetaTensor`` metadata kept) and device as ``img``, float32.

        Raises:
            ValueError: if ``img`` has no channel axis or no channels.
        """
        if img.ndim < 1 or img.shape[0] < 1:
            raise ValueError(f"ChannelArgmax needs a channel-first array with channels, got shape {tuple(img.shape)}.")
        data = torch.as_tensor(img.as_tensor() if isinstance(img, MetaTensor) else img)
        if data.shape[0] == 2:  # the usual background / foreground pair: one comparison
            index = (data[1] > data[0]).to(torch.float32)
        else:
            best = data[0]
            index = torch.zeros(best.shape, dtype=torch.float32, device=data.device)
            for channel in range(1, data.shape[0]):
                better = data[channel] > best
                index.masked_fill_(better, float(channel))
                best = torch.where(better, data[channel], best)
        result, *_ = convert_to_dst_type(index[None], dst=img, dtype=torch.float32)
        return result


class ChannelArgmaxd(MapTransform):
    """Dictionary-based wrapper of :py:class:`ChannelArgmax`, a drop-in for ``AsDiscreted(keys, argmax=True)``.

    Args:
        keys: keys of the channel-first probability maps (e.g. ``"pred"``).
        allow_missing_keys: don't raise if a key is missing. Defaults to False.

    Example:
        >>> ChannelArgmaxd(keys="pred")({"pred": torch.rand(2, 4, 4, 3)})["pred"].shape
        torch.Size([1, 4, 4, 3])
    """

    backend = ChannelArgmax.backend

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.argmax = ChannelArgmax()

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.argmax(d[key])
        return d


ChannelArgmaxD = ChannelArgmaxDict = ChannelArgmaxd


def _check_connectivity(connectivity: int, ndim: int) -> None:
    if (
        isinstance(connectivity, bool)
        or not isinstance(connectivity, (int, np.integer))
        or not 1 <= connectivity <= ndim
    ):
        raise ValueError(f"connectivity must be an integer in 1..{ndim}, got {connectivity!r}.")


def _bounding_box(mask: np.ndarray) -> tuple[slice, ...] | None:
    """The smallest box holding every True voxel of ``mask``, or None when the mask is empty."""
    box = []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        hits = np.flatnonzero(mask.any(axis=other))
        if hits.size == 0:
            return None
        box.append(slice(int(hits[0]), int(hits[-1]) + 1))
    return tuple(box)


def keep_largest_component(mask: np.ndarray, connectivity: int = 1) -> np.ndarray:
    """Keep only the largest connected component of a binary mask.

    Args:
        mask: spatial binary array (no channel axis), any number of dimensions; non-zero is foreground.
        connectivity: neighbourhood of the components: 1 = face neighbours (6 in 3D), ``mask.ndim`` = face, edge and
            corner neighbours (26 in 3D). Defaults to 1, which separates structures touching only along an edge.

    Returns:
        A new bool array, same shape; all False when ``mask`` is empty. Ties between equally large components keep
        the one found first in C order.

    Raises:
        ValueError: if ``connectivity`` is not in 1..mask.ndim.

    Example:
        >>> keep_largest_component(np.array([1, 1, 0, 1], dtype=bool)).tolist()
        [True, True, False, False]
    """
    mask = np.asarray(mask).astype(bool, copy=False)
    _check_connectivity(connectivity, mask.ndim)
    out = np.zeros(mask.shape, dtype=bool)
    box = _bounding_box(mask)
    if box is None:
        return out
    structure = ndimage.generate_binary_structure(mask.ndim, connectivity)
    labels, num = ndimage.label(mask[box], structure=structure)
    if num <= 1:
        out[box] = labels > 0
        return out
    counts = np.bincount(labels.ravel())
    counts[0] = 0
    out[box] = labels == int(np.argmax(counts))
    return out


def _fill_enclosed_background(mask: np.ndarray, structure: np.ndarray, open_axes: Sequence[int]) -> np.ndarray:
    """Set to True every background component of ``mask`` that does not touch a face across ``open_axes``."""
    box = _bounding_box(mask)
    if box is None:
        return mask.copy()
    sub = mask[box]
    labels, num = ndimage.label(~sub, structure=structure)
    out = mask.copy()
    if num == 0:
        return out
    enclosed = np.ones(num + 1, dtype=bool)
    enclosed[0] = False
    for axis in open_axes:
        for index in (0, -1):
            enclosed[np.unique(np.take(labels, index, axis=axis))] = False
    out[box] |= enclosed[labels]
    return out


def fill_holes(mask: np.ndarray, connectivity: int = 1) -> np.ndarray:
    """Fill the holes of a binary mask: background regions not connected to the array's border.

    Gives the same result as MONAI's ``FillHoles(connectivity=connectivity)`` on a one-channel binary mask, in one
    ``scipy.ndimage.label`` pass over the mask's bounding box.

    Args:
        mask: spatial binary array (no channel axis); non-zero is foreground.
        connectivity: neighbourhood through which background connects to the border (1 = face neighbours, ...,
            ``mask.ndim`` = full). Defaults to 1, which fills more: a cavity that reaches the outside only through
            a diagonal gap is filled.

    Returns:
        A new bool array, same shape.

    Raises:
        ValueError: if ``connectivity`` is not in 1..mask.ndim.

    Example:
        >>> ring = np.pad(np.pad(np.zeros((1, 1), bool), 1, constant_values=True), 1)
        >>> int(fill_holes(ring).sum())
        9
    """
    mask = np.asarray(mask).astype(bool, copy=False)
    _check_connectivity(connectivity, mask.ndim)
    structure = ndimage.generate_binary_structure(mask.ndim, connectivity)
    return _fill_enclosed_background(mask, structure, open_axes=range(mask.ndim))


def fill_holes_axial(mask: np.ndarray, connectivity: int = 1) -> np.ndarray:
    """Fill holes in every axial plane (the last axis, Z) of a 3D binary mask, slice by slice in 2D.

    Args:
        mask: binary array (X, Y, Z); non-zero is foreground.
        connectivity: in-plane neighbourhood of the background: 1 = 4-neighbours, 2 = 8-neighbours. Defaults to 1.

    Returns:
        A new bool array, same shape.

    Raises:
        ValueError: if ``mask`` is not 3D or ``connectivity`` is not 1 or 2.

    Example:
        >>> m = np.zeros((5, 5, 2), bool); m[1:4, 1:4, 0] = True; m[2, 2, 0] = False
        >>> bool(fill_holes_axial(m)[2, 2, 0])
        True
    """
    mask = np.asarray(mask).astype(bool, copy=False)
    if mask.ndim != 3:
        raise ValueError(f"fill_holes_axial needs a 3D (X, Y, Z) mask, got shape {mask.shape}.")
    _check_connectivity(connectivity, 2)
    # one 3D label call whose structure links nothing across Z: the components are the 2D components of each slice
    structure = np.zeros((3, 3, 3), dtype=bool)
    structure[:, :, 1] = ndimage.generate_binary_structure(2, connectivity)
    return _fill_enclosed_background(mask, structure, open_axes=(0, 1))


def postprocess_cranial_cavity(
    mask: np.ndarray,
    keep_largest: bool = True,
    fill_holes_3d: bool = True,
    fill_holes_2d: bool = False,
    connectivity: int = 1,
) -> np.ndarray:
    """Clean a binary cranial-cavity mask: largest component, then 3D hole filling, then optional axial filling.

    Args:
        mask: spatial binary array (X, Y, Z) (2D works when ``fill_holes_2d`` is False); non-zero is foreground.
        keep_largest: keep only the largest connected component. Defaults to True.
        fill_holes_3d: fill background regions enclosed in 3D. Defaults to True.
        fill_holes_2d: also fill holes slice by slice in the axial planes. Defaults to False.
        connectivity: neighbourhood used by all steps (see :func:`keep_largest_component`). Defaults to 1.

    Returns:
        A new bool array, same shape.

    Raises:
        ValueError: on a bad ``connectivity`` or a non-3D mask with ``fill_holes_2d``.

    Example:
        >>> m = np.zeros((6, 6, 6), bool); m[1:4, 1:4, 1:4] = True; m[5, 5, 5] = True
        >>> int(postprocess_cranial_cavity(m).sum())
        27
    """
    out = np.asarray(mask).astype(bool, copy=False)
    _check_connectivity(connectivity, out.ndim)
    if fill_holes_2d and out.ndim != 3:
        raise ValueError(f"fill_holes_2d needs a 3D (X, Y, Z) mask, got shape {out.shape}.")
    if keep_largest:
        out = keep_largest_component(out, connectivity)
    if fill_holes_3d:
        out = fill_holes(out, connectivity)
    if fill_holes_2d:
        out = fill_holes_axial(out, min(connectivity, 2))
    return out if out is not mask else out.copy()


def _voxel_volume_mm3(affine_or_spacing: NdarrayOrTensor | Sequence[float], ndim: int) -> float:
    values = convert_to_numpy(affine_or_spacing, wrap_sequence=True).astype(np.float64)
    if values.shape == (ndim + 1, ndim + 1):
        volume = abs(float(np.linalg.det(values[:ndim, :ndim])))
    elif values.shape == (ndim,):
        if np.any(values <= 0):
            raise ValueError(f"affine_or_spacing: spacing must be positive, got {values.tolist()}.")
        volume = float(np.prod(values))
    else:
        raise ValueError(
            f"affine_or_spacing must be a {ndim + 1}x{ndim + 1} affine or {ndim} spacings in mm, "
            f"got an array of shape {values.shape}."
        )
    if not np.isfinite(volume) or volume <= 0:
        raise ValueError(f"affine_or_spacing gives a voxel volume of {volume} mm^3; it must be positive and finite.")
    return volume


def intracranial_volume_ml(
    mask: NdarrayOrTensor, affine_or_spacing: NdarrayOrTensor | Sequence[float] | None = None
) -> float:
    """Volume of a binary mask in millilitres.

    Args:
        mask: binary mask (X, Y, Z) or channel-first (1, X, Y, Z); numpy, torch or MetaTensor; non-zero counts.
        affine_or_spacing: a 4x4 voxel-to-world affine in mm (the voxel volume is ``|det(affine[:3, :3])|``, right
            for tilted, sheared grids too) or the three voxel spacings in mm. Defaults to None: the affine of a
            MetaTensor ``mask``.

    Returns:
        The volume in mL (1 mL = 1000 mm^3).

    Raises:
        ValueError: on a mask that is not 3D (or 1-channel 4D), or a missing or invalid affine/spacing.

    Example:
        >>> intracranial_volume_ml(np.ones((10, 10, 10)), (1.0, 1.0, 2.0))
        2.0
    """
    shape = tuple(mask.shape)
    if len(shape) == 4 and shape[0] == 1:
        shape = shape[1:]
    if len(shape) != 3:
        raise ValueError(f"mask must be (X, Y, Z) or (1, X, Y, Z), got shape {tuple(mask.shape)}.")
    if affine_or_spacing is None:
        if not isinstance(mask, MetaTensor):
            raise ValueError("affine_or_spacing is required unless mask is a MetaTensor carrying its affine.")
        affine_or_spacing = mask.affine
    voxel_mm3 = _voxel_volume_mm3(affine_or_spacing, 3)
    if isinstance(mask, torch.Tensor):
        count = int(torch.count_nonzero(mask.as_tensor() if isinstance(mask, MetaTensor) else mask))
    else:
        count = int(np.count_nonzero(mask))
    return count * voxel_mm3 / 1000.0


class CranialCavityPostprocess(Transform):
    """Keep the largest connected component of a one-channel binary mask and fill its holes.

    Values above ``threshold`` are foreground. The output has the input's type, dtype and device (a MetaTensor
    keeps its metadata) with values 0 and 1. The work runs on the CPU with scipy (a CUDA tensor is copied there
    and back: about 1 s for 512x512x320).

    Args:
        keep_largest: keep only the largest connected component. Defaults to True.
        fill_holes_3d: fill background regions enclosed in 3D. Defaults to True.
        fill_holes_2d: also fill holes in each axial plane (last axis); closes cavities open only through the
            foramen magnum. Defaults to False.
        connectivity: neighbourhood of components and holes: 1 = face neighbours, up to the number of spatial
            dimensions = full. Defaults to 1.
        threshold: foreground is ``value > threshold``: 0.5 suits {0, 1} masks and probabilities. Defaults to 0.5.

    Raises:
        ValueError: on a bad ``connectivity`` (not 1..3); on call, on an input that is not one-channel 2D/3D.

    Example:
        >>> post = CranialCavityPostprocess(fill_holes_2d=True)
        >>> out = post(torch.ones(1, 8, 8, 4))
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(
        self,
        keep_largest: bool = True,
        fill_holes_3d: bool = True,
        fill_holes_2d: bool = False,
        connectivity: int = 1,
        threshold: float = 0.5,
    ) -> None:
        _check_connectivity(connectivity, 3)
        if not np.isfinite(threshold):
            raise ValueError(f"threshold must be a finite number, got {threshold!r}.")
        self.keep_largest = bool(keep_largest)
        self.fill_holes_3d = bool(fill_holes_3d)
        self.fill_holes_2d = bool(fill_holes_2d)
        self.connectivity = connectivity
        self.threshold = float(threshold)

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        """Apply the post-processing.

        Args:
            img: channel-first binary mask (1, X, Y, Z) (or (1, H, W) without ``fill_holes_2d``).

        Returns:
            The cleaned mask, same shape, type, dtype and device as ``img``.
        """
        if img.ndim not in (3, 4) or img.shape[0] != 1:
            raise ValueError(
                f"CranialCavityPostprocess expects a one-channel mask (1, X, Y, Z), got shape {tuple(img.shape)}; "
                "apply AsDiscrete(argmax=True) or a threshold first."
            )
        spatial = convert_to_numpy(img[0]) > self.threshold
        connectivity = min(self.connectivity, spatial.ndim)
        out = postprocess_cranial_cavity(
            spatial,
            keep_largest=self.keep_largest,
            fill_holes_3d=self.fill_holes_3d,
            fill_holes_2d=self.fill_holes_2d,
            connectivity=connectivity,
        )
        result, *_ = convert_to_dst_type(out[None], dst=img)
        return result


class CranialCavityPostprocessd(MapTransform):
    """Dictionary-based wrapper of :py:class:`bundle.postprocessing.CranialCavityPostprocess`.

    Args:
        keys: keys of the masks to clean (e.g. ``"pred"``).
        allow_missing_keys: don't raise if a key is missing. Defaults to False.
        kwargs: the arguments of :py:class:`CranialCavityPostprocess`.

    Example:
        >>> post = CranialCavityPostprocessd(keys="pred", fill_holes_2d=True)
    """

    backend = CranialCavityPostprocess.backend

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False, **kwargs) -> None:
        super().__init__(keys, allow_missing_keys)
        self.postprocess = CranialCavityPostprocess(**kwargs)

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.postprocess(d[key])
        return d


CranialCavityPostprocessD = CranialCavityPostprocessDict = CranialCavityPostprocessd
