# SPDX-License-Identifier: Apache-2.0
"""Load a head CT - a NIfTI file or a DICOM series folder - as a validated float32 HU volume.

Two entry points share one implementation:

- :class:`CTImageReader`, a MONAI ``ImageReader`` for configs: ``LoadImaged(keys="image", reader=CTImageReader())``.
  It returns the volume in the input's own (native) voxel order with its RAS affine, like MONAI's readers, so that
  ``Orientationd(axcodes="RAS")`` in the pipeline makes it canonical and ``Invertd`` can put predictions back into
  the input's native geometry for ``SaveImaged``.
- :func:`load_ct`, a function for scripts and tests, which also applies the RAS orientation and returns
  ``(array (X, Y, Z) RAS, affine, meta)``.

NIfTI files are read by MONAI's ``NibabelReader`` (nibabel); DICOM series by :mod:`bundle.io.dicom_series`.
Everything wrong with the input raises :class:`~bundle.io.errors.CTInputError` naming the file and the problem.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
from monai.data import ImageReader, NibabelReader
from monai.utils import ensure_tuple
from nibabel.affines import voxel_sizes

from .checks import check_head_ct as _check_head_ct
from .checks import check_slice_pixels
from .dicom_series import read_dicom_series
from .errors import CTInputError
from .paths import NIFTI_SUFFIXES, is_nifti

__all__ = ["CTImageReader", "load_ct", "quiet_gpu_decoder_notice", "NIFTI_SUFFIXES"]

logger = logging.getLogger(__name__)

#: The logger and the warning of MONAI's GPU DICOM decoder that say, on every machine without nvImageCodec, that it
#: is not used (see :func:`quiet_gpu_decoder_notice`).
GPU_DECODER_LOGGER = "monai.data.nvimgcodec_pydicom_plugin"
GPU_DECODER_WARNING = "NvImgCodecPydicomReader: nvImageCodec decoder plugin did not register"


@contextlib.contextmanager
def quiet_gpu_decoder_notice() -> Iterator[None]:
    """Silence, inside the block only, the notice that MONAI's GPU DICOM decoder is unavailable.

    MONAI's ``LoadImage`` (and so ``LoadImaged`` in a config) instantiates every reader it knows, among them
    ``NvImgCodecPydicomReader``, which logs a warning and raises a ``UserWarning`` on every machine without
    nvImageCodec. The CPU decoders are used, and this bundle reads DICOM series itself, so it is only noise: wrap the
    construction of the pre-processing in this block. Nothing outside the block is changed (the logger's level and
    the warning filters are restored).

    Example:
        >>> with quiet_gpu_decoder_notice():
        ...     preprocessing = parser.get_parsed_content("preprocessing")  # doctest: +SKIP
    """
    plugin_logger = logging.getLogger(GPU_DECODER_LOGGER)
    level = plugin_logger.level
    plugin_logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=GPU_DECODER_WARNING)
            yield
    finally:
        plugin_logger.setLevel(level)


_DICOM_FILE_SUFFIXES = (".dcm", ".dicom", ".ima")


def _read_nifti(path: Path, air_hu: float, clip_below_air: bool) -> tuple[np.ndarray, np.ndarray, dict]:
    """One NIfTI file as float32 HU in its stored voxel order, its RAS affine and MONAI-style metadata."""
    reader = NibabelReader()
    try:
        data, meta = reader.get_data(reader.read(str(path)))
        data = np.asarray(data)
    except Exception as err:  # nibabel raises many types for corrupt or truncated files
        raise CTInputError(path, f"is not a readable NIfTI file ({type(err).__name__}: {err}).") from err
    if data.dtype.fields is not None or data.dtype.kind not in "iuf":
        raise CTInputError(path, f"has voxel type {data.dtype}; a CT volume must hold real numbers (HU).")
    shape = data.shape
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]  # (X, Y, Z, 1): a 3D volume stored as 4D with one time point
    if data.ndim > 3:
        raise CTInputError(
            path,
            f"is {len(shape)}D with shape {shape}: it holds {int(np.prod(shape[3:]))} volumes. Pass a single 3D "
            "volume (split the series first).",
        )
    if data.ndim < 3 or min(data.shape) < 2:
        raise CTInputError(path, f"is a 2D image (shape {shape}); the model needs a 3D volume of axial slices.")
    if data.ndim != len(shape):
        logger.info("%s: squeezed shape %s to %s", path, shape, data.shape)
    affine = np.asarray(meta["affine"], dtype=np.float64)
    if affine.shape != (4, 4) or not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-9:
        raise CTInputError(path, f"has an invalid (non-finite or singular) affine {affine.tolist()}.")
    hu = data.astype(np.float32)
    bad = hu.size - int(np.count_nonzero(np.isfinite(hu)))
    if bad:
        raise CTInputError(
            path, f"has {bad} NaN or infinite voxel(s) of {hu.size}; they cannot be segmented. Fix or re-export it."
        )
    axis = int(np.argmax(np.abs(affine[2, :3]) / voxel_sizes(affine)))
    slices = np.moveaxis(hu, axis, 0)  # a view: np.take copies, and takes minutes on a 512x512x300 volume
    for k in range(slices.shape[0]):  # before clipping: corrupted bytes give values far below air too
        check_slice_pixels(slices[k], path, f"slice {k} of {slices.shape[0]} (axis {axis})")
    lo, hi = float(hu.min()), float(hu.max())
    if hi - lo < 50 or hi < 100 or lo >= 0:
        warnings.warn(
            f"{path}: values [{lo:.1f}, {hi:.1f}] do not look like HU of a head CT (air near -1000, bone above 300); "
            "the model expects Hounsfield units.",
            stacklevel=3,
        )
    if clip_below_air:
        np.maximum(hu, np.float32(air_hu), out=hu)
    meta = dict(meta)
    meta["spatial_shape"] = np.asarray(hu.shape)
    meta["original_channel_dim"] = float("nan")
    meta["ct_format"] = "nifti"
    return hu, affine, meta


def _read_one(path: str | os.PathLike, slice_spacing: float | str, air_hu: float, clip_below_air: bool):
    path = Path(path)
    if not path.exists():
        raise CTInputError(path, "does not exist.")
    if path.is_dir():
        return read_dicom_series(path, slice_spacing=slice_spacing, air_hu=air_hu, clip_below_air=clip_below_air)
    if is_nifti(path):
        return _read_nifti(path, air_hu, clip_below_air)
    if path.name.lower().endswith(_DICOM_FILE_SUFFIXES):
        raise CTInputError(
            path, "is a single DICOM file; pass the folder that holds the whole series (one file per slice)."
        )
    raise CTInputError(path, "is not a NIfTI file (.nii, .nii.gz) or a DICOM series folder.")


class _Pending:
    """What ``CTImageReader.read`` returns: the paths, loaded in ``get_data`` (see the class docstring)."""

    def __init__(self, paths: Sequence[str]):
        self.paths = list(paths)


class CTImageReader(ImageReader):
    """MONAI image reader for head CT: NIfTI files and DICOM series folders, validated, as float32 HU.

    Use it in configs as ``LoadImaged(keys=["image"], reader=CTImageReader())`` (or
    ``"reader": "$bundle.io.CTImageReader()"``). The array keeps the input's voxel order (NIfTI: as stored;
    DICOM: columns, rows, slices from inferior to superior), with the RAS ``affine`` and ``original_affine`` in the
    metadata, like MONAI's own readers; add ``Orientationd(keys, axcodes="RAS")`` after ``EnsureChannelFirstd`` to
    reach the project's canonical (X, Y, Z) RAS layout, and ``Invertd`` + ``SaveImaged`` write a prediction back in
    the input's native geometry. DICOM series are tilt-corrected and regularly spaced (see
    :func:`~bundle.io.dicom_series.read_dicom_series`); their native geometry is that regular grid, and
    ``meta["ct_source_geometry"]`` maps back to the source slices.

    Loading and validation happen in :meth:`get_data`, not :meth:`read`: ``LoadImage`` falls back to its other
    readers when ``read`` raises, which would load a rejected file (say, one with NaN voxels) silently through
    nibabel. Errors therefore surface from ``LoadImage`` as :class:`~bundle.io.errors.CTInputError` (wrapped in
    MONAI's ``RuntimeError`` inside ``Compose``; the ``CTInputError`` is its ``__cause__``).

    Args:
        slice_spacing: regular slice spacing for DICOM series with uneven spacing. Default "auto" (the finest regular
            spacing of the series); "median", or a number in mm.
        air_hu: HU given to padding and out-of-field voxels and, with ``clip_below_air``, the lowest value. Defaults to
            -1024.0.
        clip_below_air: raise values below ``air_hu`` to it. Defaults to True.
        check_head_ct: also refuse volumes without image content and grids no head CT has, and warn about coarse
            ones (:func:`bundle.io.checks.check_head_ct`); the segmenter and the bundle's configs set it. Defaults
            to False (any CT volume, e.g. small test volumes). Corrupted slices are refused either way.

    Example:
        >>> from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged, Orientationd
        >>> load = Compose([LoadImaged("image", reader=CTImageReader()), EnsureChannelFirstd("image"),
        ...                 Orientationd("image", axcodes="RAS")])
        >>> data = load({"image": "case_001.nii.gz"})  # doctest: +SKIP
    """

    def __init__(
        self,
        slice_spacing: float | str = "auto",
        air_hu: float = -1024.0,
        clip_below_air: bool = True,
        check_head_ct: bool = False,
    ):
        super().__init__()
        if isinstance(slice_spacing, str):
            if slice_spacing not in ("auto", "median"):
                raise ValueError(f"slice_spacing must be 'auto', 'median' or a number > 0, got {slice_spacing!r}.")
        elif not float(slice_spacing) > 0:
            raise ValueError(f"slice_spacing must be 'auto', 'median' or a number > 0, got {slice_spacing!r}.")
        if not math.isfinite(air_hu):
            raise ValueError(f"air_hu must be finite, got {air_hu}.")
        self.slice_spacing = slice_spacing
        self.air_hu = float(air_hu)
        self.clip_below_air = bool(clip_below_air)
        self.check_head_ct = bool(check_head_ct)

    def verify_suffix(self, filename: Sequence[str | os.PathLike] | str | os.PathLike) -> bool:
        """Whether every path is a NIfTI file name or an existing folder (a DICOM series).

        Args:
            filename: one path or several.

        Returns:
            True when this reader can be asked to load them.
        """
        return all(is_nifti(Path(f)) or Path(f).is_dir() for f in ensure_tuple(filename))

    def read(self, data: Sequence[str | os.PathLike] | str | os.PathLike, **kwargs) -> _Pending:
        """Record the paths to load; nothing is read yet (see the class docstring).

        Args:
            data: one path, or several paths stacked as channels in :meth:`get_data`.
            kwargs: not used; accepted for compatibility with ``LoadImage``.

        Returns:
            A handle for :meth:`get_data`.
        """
        return _Pending([os.fspath(p) for p in ensure_tuple(data)])

    def get_data(self, img: _Pending) -> tuple[np.ndarray, dict]:
        """Load, validate and convert the recorded paths.

        Args:
            img: the handle from :meth:`read`.

        Returns:
            ``(array, meta)``: float32 ``(X, Y, Z)`` (or ``(C, X, Y, Z)`` for several paths, which must share shape
            and affine) and the metadata of the first path.

        Raises:
            CTInputError: for any input the loader refuses (the message names the file and the problem).
        """
        if not isinstance(img, _Pending):
            raise TypeError(f"get_data expects the result of CTImageReader.read, got {type(img).__name__}.")
        arrays, metas = [], []
        for path in img.paths:
            array, affine, meta = _read_one(path, self.slice_spacing, self.air_hu, self.clip_below_air)
            if self.check_head_ct:
                _check_head_ct(array, affine, path)
            meta["filename_or_obj"] = path
            arrays.append(array)
            metas.append(meta)
        if len(arrays) == 1:
            return arrays[0], metas[0]
        for path, array, meta in zip(img.paths[1:], arrays[1:], metas[1:], strict=True):
            if array.shape != arrays[0].shape or not np.allclose(meta["affine"], metas[0]["affine"], atol=1e-4):
                raise CTInputError(path, f"cannot be stacked as a channel with {img.paths[0]}: shape or affine differ.")
        meta = metas[0]
        meta["original_channel_dim"] = 0
        return np.stack(arrays), meta


def load_ct(
    path: str | os.PathLike,
    *,
    slice_spacing: float | str = "auto",
    air_hu: float = -1024.0,
    clip_below_air: bool = True,
) -> tuple[np.ndarray, np.ndarray, dict]:
    """Load a head CT (NIfTI file or DICOM series folder) as float32 HU in the canonical (X, Y, Z) RAS layout.

    The result equals ``LoadImaged(reader=CTImageReader()) -> EnsureChannelFirstd -> Orientationd("RAS")`` (without
    the channel axis): the last axis runs from inferior to superior.

    Args:
        path: a ``.nii``/``.nii.gz`` file or a folder holding one DICOM series.
        slice_spacing: see :class:`CTImageReader`. Defaults to "auto".
        air_hu: see :class:`CTImageReader`. Defaults to -1024.0.
        clip_below_air: see :class:`CTImageReader`. Defaults to True.

    Returns:
        ``(image, affine, meta)``: float32 array ``(X, Y, Z)``, its 4x4 RAS affine (float64), and the metadata
        (``original_affine`` is the input's native affine, ``ct_*`` keys say what the loader did).

    Raises:
        CTInputError: for input that cannot be loaded correctly (missing, empty, 2D/4D, NaN, not CT, several series,
            missing or duplicate slices, non-axial, corrupt ...).

    Example:
        >>> image, affine, meta = load_ct("case_001.nii.gz")  # doctest: +SKIP
        >>> image.dtype, image.shape[-1] == meta["spatial_shape"][-1]  # doctest: +SKIP
        (dtype('float32'), True)
    """
    import torch
    from monai.data import MetaTensor
    from monai.transforms import Orientation

    reader = CTImageReader(slice_spacing=slice_spacing, air_hu=air_hu, clip_below_air=clip_below_air)
    array, meta = reader.get_data(reader.read(path))
    native_affine = np.asarray(meta["affine"], dtype=np.float64)
    tensor = MetaTensor(torch.from_numpy(array)[None], affine=torch.as_tensor(native_affine))
    oriented = Orientation(axcodes="RAS", labels=(("L", "R"), ("P", "A"), ("I", "S")))(tensor)
    affine = oriented.affine.numpy().astype(np.float64)
    image = np.ascontiguousarray(oriented.numpy()[0])
    meta["affine"] = affine
    meta["original_affine"] = native_affine
    meta["spatial_shape"] = np.asarray(image.shape)
    return image, affine, meta
