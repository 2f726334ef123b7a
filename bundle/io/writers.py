# SPDX-License-Identifier: Apache-2.0
"""Atomic writers for CT volumes: NIfTI files and DICOM CT Image Storage series.

Both writers take arrays in the project's convention (spatial axes ``(X, Y, Z)``, 4x4 RAS world affine in mm, the
last axis axial from inferior to superior) and never leave a half-written output behind: they write to a temporary
name beside the target and then ``os.replace`` it into place.

DICOM geometry: DICOM uses the LPS patient frame, so RAS x and y are negated. ``pixel_array`` of a DICOM image is
``(rows, columns)``; the column index advances along ``ImageOrientationPatient[0:3]`` and the row index along
``ImageOrientationPatient[3:6]``. The writer stores each axial slice the way scanners do (columns towards the
patient's left, rows towards posterior for an axial RAS volume), so the array's X and Y axes are flipped where needed
and transposed. A gantry-tilted acquisition (as GE scanners store it) keeps the slice positions on the table axis and
tilts the in-plane column direction; its RAS affine therefore carries a shear, which the writer reproduces exactly.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Sequence

import numpy as np
from nibabel.affines import voxel_sizes

from bundle.utils import atomic_output

__all__ = [
    "DICOM_RESCALE_INTERCEPT",
    "WriterInputError",
    "affine_gantry_tilt_deg",
    "write_ct_dicom_series",
    "write_nifti",
]

logger = logging.getLogger(__name__)

#: Rescale intercept written to every DICOM slice (stored value = HU + 1024).
DICOM_RESCALE_INTERCEPT = -1024

_UID_ROOT = "brain-ct-convlstm-phantom"
_LPS = np.diag([-1.0, -1.0, 1.0])


class WriterInputError(ValueError):
    """Raised when an array, affine or output path cannot be written as asked; the message names the problem."""


def _check_affine(affine: np.ndarray, ndim_spatial: int = 3) -> np.ndarray:
    aff = np.asarray(affine, dtype=np.float64)
    if aff.shape != (4, 4):
        raise WriterInputError(f"affine must be a 4x4 matrix, got shape {aff.shape}.")
    if not np.all(np.isfinite(aff)):
        raise WriterInputError("affine contains non-finite values.")
    if not np.allclose(aff[3], [0, 0, 0, 1]):
        raise WriterInputError(f"affine's last row must be [0, 0, 0, 1], got {aff[3].tolist()}.")
    if abs(np.linalg.det(aff[:3, :3])) < 1e-9:
        raise WriterInputError("affine is singular (zero voxel size or collinear axes).")
    return aff


def _cast(array: np.ndarray, dtype: np.dtype, name: str) -> np.ndarray:
    """Cast ``array`` to ``dtype``, rounding to integers and refusing values the integer type cannot hold."""
    dtype = np.dtype(dtype)
    if array.dtype == dtype:
        return array
    if np.issubdtype(dtype, np.integer):
        if array.dtype.kind == "f":
            if not np.all(np.isfinite(array)):
                raise WriterInputError(f"{name} has NaN or infinite values and cannot be stored as {dtype}.")
            array = np.rint(array)
        info = np.iinfo(dtype)
        if array.size and (array.min() < info.min or array.max() > info.max):
            raise WriterInputError(
                f"{name} values span [{array.min()}, {array.max()}], outside the range of {dtype} "
                f"[{info.min}, {info.max}]."
            )
    return array.astype(dtype)


def write_nifti(
    array: np.ndarray, affine: np.ndarray, path: str | os.PathLike, *, dtype: np.dtype | str | type | None = None
) -> Path:
    """Write a 3D (or 4D) array as a NIfTI-1 file with its RAS affine, atomically.

    The sform is set with code 1 (scanner). The qform gets the same affine with code 1 when the affine is a rotation
    and scaling; a sheared affine (a gantry-tilted acquisition) cannot be a qform, so then the qform code is 0
    (unknown) and readers use the exact sform. The file is written to a temporary name in the target folder and then
    moved into place with ``os.replace``.

    Args:
        array: image or label array, spatial axes first (``(X, Y, Z)`` or ``(X, Y, Z, T)``).
        affine: 4x4 voxel-to-RAS-world matrix in mm.
        path: output file ending in ``.nii`` or ``.nii.gz``; its folder is created if missing.
        dtype: on-disk data type (default None: the array's own). Floats cast to an integer type are rounded; values
            outside that type's range raise.

    Returns:
        The path written.

    Raises:
        WriterInputError: if the array is not 3D/4D, the affine is not a finite non-singular 4x4 matrix, the file name
            does not end in ``.nii``/``.nii.gz`` or the values do not fit ``dtype``.

    Example:
        >>> import numpy as np, tempfile, os
        >>> p = write_nifti(np.zeros((4, 4, 3)), np.eye(4), os.path.join(tempfile.mkdtemp(), "x.nii.gz"), dtype="int16")
        >>> p.name
        'x.nii.gz'
    """
    import nibabel as nib

    path = Path(path)
    if not (path.name.endswith(".nii") or path.name.endswith(".nii.gz")):
        raise WriterInputError(f"NIfTI output path must end in .nii or .nii.gz, got {path}.")
    array = np.asarray(array)
    if array.ndim not in (3, 4):
        raise WriterInputError(f"array for {path} must be 3D or 4D, got shape {array.shape}.")
    aff = _check_affine(affine)
    if dtype is not None:
        array = _cast(array, np.dtype(dtype), f"array for {path}")
    if array.dtype == np.bool_:
        array = array.astype(np.uint8)

    img = nib.Nifti1Image(array, aff)
    img.header.set_xyzt_units("mm", "sec")
    img.set_sform(aff, code=1)
    rot = aff[:3, :3] / voxel_sizes(aff)
    if np.allclose(rot.T @ rot, np.eye(3), atol=1e-6):
        img.set_qform(aff, code=1)
    else:
        img.set_qform(aff, code=0)
        logger.debug("affine for %s is sheared; qform code set to 0, sform holds the exact geometry", path)
    img.header.set_data_dtype(array.dtype)

    with atomic_output(path) as tmp:
        nib.save(img, tmp)
    logger.debug("wrote %s", path)
    return path


def affine_gantry_tilt_deg(affine: np.ndarray) -> float:
    """The tilt of the slice plane about the patient's left-right axis implied by a RAS affine, in degrees.

    It is the angle between the slice plane's normal (oriented superior) and the superior axis, positive when the
    plane's anterior edge is higher than its posterior edge (the sign GE uses in ``GantryDetectorTilt``, e.g. +18.5
    for a scan parallel to the orbitomeatal line).

    Args:
        affine: 4x4 voxel-to-RAS matrix whose first two axes span the slice plane.

    Returns:
        The signed tilt in degrees (0 for an axial plane).

    Example:
        >>> import numpy as np
        >>> t = np.deg2rad(10.0)
        >>> round(affine_gantry_tilt_deg(np.array([[1, 0, 0, 0], [0, np.cos(t), 0, 0], [0, np.sin(t), 1, 0],
        ...                                          [0, 0, 0, 1]])), 6)
        10.0
    """
    aff = _check_affine(affine)
    n = np.cross(aff[:3, 0], aff[:3, 1])
    n = n / np.linalg.norm(n)
    if n[2] < 0:
        n = -n
    # RAS: +y is anterior. A plane whose anterior edge is higher has a normal leaning posterior (n_y < 0).
    return float(np.degrees(np.arctan2(-n[1], n[2])))


def _uid(*parts: object):
    from pydicom.uid import generate_uid

    return generate_uid(entropy_srcs=[_UID_ROOT, *[str(p) for p in parts]])


def _ds(value: float) -> str:
    """Format a number for a DS element (at most 16 characters)."""
    text = f"{value:.6f}".rstrip("0").rstrip(".")
    if text in ("-0", ""):
        text = "0"
    if len(text) > 16:
        text = f"{value:.8g}"
    return text


def write_ct_dicom_series(
    image_hu: np.ndarray,
    affine: np.ndarray,
    output_dir: str | os.PathLike,
    *,
    gantry_tilt_deg: float = 0.0,
    series_description: str = "",
    patient_id: str = "PHANTOM",
    study_instance_uid: str | None = None,
    series_instance_uid: str | None = None,
    seed: int = 0,
    slice_thickness_mm: float | None = None,
    window: Sequence[float] = (40.0, 80.0),
) -> list[Path]:
    """Write an axial CT volume as a DICOM series: one CT Image Storage file per slice, atomically.

    Each file has Explicit VR Little Endian file meta, SOP Class CT Image Storage, Modality CT, 16-bit pixels with
    RescaleSlope 1 and RescaleIntercept -1024 (unsigned storage, or signed when values go below -1024),
    ImagePositionPatient / ImageOrientationPatient in LPS derived from the RAS affine, PixelSpacing as
    ``[row spacing, column spacing]``, SliceThickness, InstanceNumber (1 = first slice of the last array axis),
    SliceLocation (the table position, ``ImagePositionPatient`` z), a shared FrameOfReferenceUID and
    GantryDetectorTilt when ``gantry_tilt_deg`` is non-zero. UIDs are deterministic: the same ``seed``, patient and
    description give the same UIDs. The series is written to a temporary folder beside ``output_dir`` and renamed
    into place.

    Args:
        image_hu: HU values, shape ``(X, Y, Z)``; rounded to integers.
        affine: 4x4 voxel-to-RAS matrix (mm). For a gantry-tilted acquisition the third column is the table step and
            the second column is tilted (a sheared affine), as GE stores it.
        output_dir: folder to create for the series; it must not exist or be empty.
        gantry_tilt_deg: value of GantryDetectorTilt (default 0.0: tag omitted). A warning is logged when it differs
            from the plane tilt implied by ``affine`` by more than 0.1 degree.
        series_description: SeriesDescription (default "").
        patient_id: PatientID and PatientName (default "PHANTOM").
        study_instance_uid: StudyInstanceUID (default None: derived from ``seed`` and ``patient_id``).
        series_instance_uid: SeriesInstanceUID (default None: derived from ``seed``, ``patient_id`` and
            ``series_description``).
        seed: entropy for the generated UIDs (default 0).
        slice_thickness_mm: SliceThickness (default None: the perpendicular distance between slice planes).
        window: WindowCenter and WindowWidth (default (40, 80), a brain window).

    Returns:
        The written files in slice order.

    Raises:
        WriterInputError: if the image is not 3D, has non-finite values or values outside what 16-bit storage with
            intercept -1024 can hold, the affine is invalid, or ``output_dir`` exists and is not empty.

    Example:
        >>> import numpy as np, tempfile, os
        >>> out = os.path.join(tempfile.mkdtemp(), "series")
        >>> files = write_ct_dicom_series(np.zeros((8, 8, 3)), np.eye(4), out)
        >>> len(files)
        3
    """
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, CTImageStorage, ExplicitVRLittleEndian

    output_dir = Path(output_dir)
    image = np.asarray(image_hu)
    if image.ndim != 3:
        raise WriterInputError(f"image_hu for {output_dir} must be 3D (X, Y, Z), got shape {image.shape}.")
    if image.dtype.kind not in "iuf" or image.dtype == np.bool_:
        raise WriterInputError(f"image_hu for {output_dir} must be numeric, got dtype {image.dtype}.")
    if image.dtype.kind == "f" and not np.all(np.isfinite(image)):
        raise WriterInputError(f"image_hu for {output_dir} has NaN or infinite values.")
    aff = _check_affine(affine)
    if output_dir.exists() and (not output_dir.is_dir() or any(output_dir.iterdir())):
        raise WriterInputError(
            f"DICOM output folder {output_dir} already exists and is not empty; refusing to overwrite."
        )
    if len(window) != 2 or window[1] <= 0:
        raise WriterInputError(f"window must be (center, width) with width > 0, got {window}.")

    implied_tilt = affine_gantry_tilt_deg(aff)
    if abs(implied_tilt - float(gantry_tilt_deg)) > 0.1:
        logger.warning(
            "gantry_tilt_deg=%s differs from the slice-plane tilt %.2f implied by the affine for %s",
            gantry_tilt_deg,
            implied_tilt,
            output_dir,
        )

    hu = np.rint(image).astype(np.int64) if image.dtype.kind == "f" else image.astype(np.int64)
    stored = hu - DICOM_RESCALE_INTERCEPT
    if stored.min() >= 0 and stored.max() <= np.iinfo(np.uint16).max:
        stored = stored.astype(np.uint16)
    elif stored.min() >= np.iinfo(np.int16).min and stored.max() <= np.iinfo(np.int16).max:
        stored = stored.astype(np.int16)
    else:
        raise WriterInputError(
            f"image_hu for {output_dir} spans [{hu.min()}, {hu.max()}] HU, which 16-bit storage with "
            f"RescaleIntercept {DICOM_RESCALE_INTERCEPT} cannot hold."
        )

    # Orient the stored slices like a scanner: columns towards patient left (+x LPS), rows towards posterior (+y LPS).
    vox = aff[:3, :3]
    col_axis = _LPS @ vox[:, 0]  # direction of increasing array index 0, in LPS
    row_axis = _LPS @ vox[:, 1]
    flip_x = col_axis[int(np.argmax(np.abs(col_axis)))] < 0
    flip_y = row_axis[int(np.argmax(np.abs(row_axis)))] < 0
    nx, ny, nz = image.shape
    if flip_x:
        stored = stored[::-1]
        col_axis = -col_axis
    if flip_y:
        stored = stored[:, ::-1]
        row_axis = -row_axis
    dx = float(np.linalg.norm(col_axis))
    dy = float(np.linalg.norm(row_axis))
    iop = np.concatenate([col_axis / dx, row_axis / dy])
    normal = np.cross(iop[:3], iop[3:])
    step = _LPS @ vox[:, 2]
    thickness = float(abs(step @ normal)) if slice_thickness_mm is None else float(slice_thickness_mm)
    if thickness <= 0:
        raise WriterInputError(f"slice_thickness_mm must be > 0, got {slice_thickness_mm}.")

    study_uid = study_instance_uid or _uid("study", seed, patient_id)
    series_uid = series_instance_uid or _uid("series", seed, patient_id, series_description)
    for_uid = _uid("frame-of-reference", study_uid, series_uid)

    names = []
    with atomic_output(output_dir, directory=True) as tmp_dir:
        for k in range(nz):
            i0 = nx - 1 if flip_x else 0
            j0 = ny - 1 if flip_y else 0
            pos_ras = aff @ np.array([i0, j0, k, 1.0])
            ipp = _LPS @ pos_ras[:3]
            sop_uid = _uid("instance", series_uid, k)

            meta = FileMetaDataset()
            meta.MediaStorageSOPClassUID = CTImageStorage
            meta.MediaStorageSOPInstanceUID = sop_uid
            meta.TransferSyntaxUID = ExplicitVRLittleEndian
            meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
            ds = pydicom.Dataset()
            ds.file_meta = meta
            ds.SpecificCharacterSet = "ISO_IR 100"
            ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
            ds.SOPClassUID = CTImageStorage
            ds.SOPInstanceUID = sop_uid
            ds.StudyDate = "20000101"
            ds.SeriesDate = "20000101"
            ds.StudyTime = "120000"
            ds.SeriesTime = "120000"
            ds.AccessionNumber = ""
            ds.Modality = "CT"
            ds.Manufacturer = "brain_ct_convlstm_segmentation phantom"
            ds.ReferringPhysicianName = ""
            ds.StudyDescription = "HEAD"
            ds.SeriesDescription = series_description
            ds.PatientName = patient_id
            ds.PatientID = patient_id
            ds.PatientBirthDate = ""
            ds.PatientSex = ""
            ds.BodyPartExamined = "HEAD"
            ds.SliceThickness = _ds(thickness)
            ds.KVP = "120"
            ds.ConvolutionKernel = "STANDARD"
            ds.PatientPosition = "HFS"
            if gantry_tilt_deg:
                ds.GantryDetectorTilt = _ds(float(gantry_tilt_deg))
            ds.StudyInstanceUID = study_uid
            ds.SeriesInstanceUID = series_uid
            ds.StudyID = "1"
            ds.SeriesNumber = 1
            ds.AcquisitionNumber = 1
            ds.InstanceNumber = k + 1
            ds.ImagePositionPatient = [_ds(v) for v in ipp]
            ds.ImageOrientationPatient = [_ds(v) for v in iop]
            ds.FrameOfReferenceUID = for_uid
            ds.PositionReferenceIndicator = ""
            ds.SliceLocation = _ds(float(ipp[2]))
            ds.PixelSpacing = [_ds(dy), _ds(dx)]
            ds.RescaleIntercept = str(DICOM_RESCALE_INTERCEPT)
            ds.RescaleSlope = "1"
            ds.RescaleType = "HU"
            ds.WindowCenter = _ds(float(window[0]))
            ds.WindowWidth = _ds(float(window[1]))
            pixels = np.ascontiguousarray(stored[:, :, k].T)  # (rows, columns) = (Y, X)
            ds.set_pixel_data(pixels, "MONOCHROME2", 16, generate_instance_uid=False)
            name = f"slice_{k + 1:04d}.dcm"
            ds.save_as(tmp_dir / name, enforce_file_format=True)
            names.append(name)
    files = [output_dir / n for n in names]
    logger.debug("wrote DICOM series %s (%d slices)", output_dir, len(files))
    return files
