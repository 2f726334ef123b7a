# SPDX-License-Identifier: Apache-2.0
"""DICOM SEG output: the cranial-cavity mask as a binary Segmentation object that references its source CT series.

Built with highdicom (the maintained DICOM SEG library). One segment, "Cranial cavity", coded as

- property category: SCT 91723000 "Anatomical Structure" (DICOM CID 7150; older objects used SCT 123037004,
  "Body structure", which current DICOM and pydicom no longer list for this purpose);
- property type: SCT 1101003 "Cranial Cavity" (DICOM CID 7140, brain structures).

Frames: one per source slice that contains the mask (``omit_empty_frames=True``, the highdicom default and what
viewers expect); every stored frame references its source CT instance, and the object references the source series.
An all-empty mask is stored with every frame (DICOM SEG cannot have zero frames). Gantry-tilted series work: the
frames take the source slices' own ImagePositionPatient / ImageOrientationPatient.

Two steps, so that any pipeline can use it:

1. frames ``(num_slices, Rows, Columns)``, one per source slice: after ``bundle.io.load_ct`` (which may resample
   a tilted or unevenly spaced series) use ``bundle.io.resample_to_source_slices(mask, affine,
   meta["ct_source_geometry"])``, whose frames follow ``geometry.files``; for a mask that is exactly on the series'
   own voxel grid, :func:`frames_from_volume` does the same with a check that every pixel centre falls on a mask
   voxel centre. Both map source pixels to voxels with :func:`bundle.io.dicom_series.source_pixel_coordinates`;
2. :func:`write_dicom_seg` writes the frames (one per dataset, in the same order) atomically.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pydicom
import torch
from monai.config import NdarrayOrTensor
from monai.utils.type_conversion import convert_to_numpy
from pydicom.sr.coding import Code

from bundle.io.dicom_series import SourceGeometry, source_pixel_coordinates
from bundle.utils import atomic_output

__all__ = [
    "DicomSegError",
    "CRANIAL_CAVITY_CATEGORY",
    "CRANIAL_CAVITY_TYPE",
    "ALGORITHM_FAMILIES",
    "frames_from_volume",
    "write_dicom_seg",
]

logger = logging.getLogger(__name__)

#: Segmented property category of the segment (DICOM CID 7150).
CRANIAL_CAVITY_CATEGORY = Code("91723000", "SCT", "Anatomical Structure")
#: Segmented property type of the segment (DICOM CID 7140).
CRANIAL_CAVITY_TYPE = Code("1101003", "SCT", "Cranial Cavity")
#: Algorithm families (DICOM CID 7162) by short name: the network, or the classical pseudo-label pipeline.
ALGORITHM_FAMILIES = {
    "ai": Code("123110", "DCM", "Artificial Intelligence"),
    "morphology": Code("123108", "DCM", "Morphological Operations"),
}
# Type 2 attributes highdicom copies from the source; anonymised series often lack them.
_PATIENT_STUDY_TYPE2 = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "AccessionNumber",
    "StudyID",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
)
_GEOMETRY = ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "Rows", "Columns")


class DicomSegError(ValueError):
    """The mask or the source datasets cannot be written as a DICOM SEG; the message says why."""


def _describe(ds: pydicom.Dataset) -> str:
    name = getattr(ds, "filename", None)
    return f"{name}" if name else f"instance {getattr(ds, 'SOPInstanceUID', '?')}"


def _check_sources(source_datasets: Sequence[pydicom.Dataset]) -> None:
    if len(source_datasets) == 0:
        raise DicomSegError("source_datasets is empty; the SEG must reference the CT slices it was made from.")
    for ds in source_datasets:
        missing = [k for k in ("SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID", *_GEOMETRY) if k not in ds]
        if missing:
            raise DicomSegError(f"source dataset {_describe(ds)} lacks {', '.join(missing)}.")
    for key in ("SeriesInstanceUID", "FrameOfReferenceUID", "Rows", "Columns"):
        values = {str(getattr(ds, key, None)) for ds in source_datasets}
        if len(values) > 1:
            raise DicomSegError(f"source datasets must come from one series; they differ in {key}: {sorted(values)}.")
    uids = [ds.SOPInstanceUID for ds in source_datasets]
    if len(set(uids)) != len(uids):
        raise DicomSegError("source datasets contain duplicate SOPInstanceUIDs (the same slice given twice).")


def frames_from_volume(
    mask: NdarrayOrTensor, affine: NdarrayOrTensor, source_datasets: Sequence[pydicom.Dataset], tolerance: float = 0.05
) -> np.ndarray:
    """Cut a mask on the series' own voxel grid into one DICOM frame per source slice.

    Args:
        mask: binary mask (X, Y, Z) or (1, X, Y, Z) in the array convention of the loader (RAS), non-zero = inside.
        affine: its 4x4 voxel-to-RAS affine in mm (sheared for gantry-tilted series).
        source_datasets: the series' slices (headers are enough), in any order.
        tolerance: largest allowed distance, in voxels, between a pixel centre and the nearest mask voxel centre.
            Defaults to 0.05: the mask must be on the series' native grid, not resampled.

    Returns:
        bool array (len(source_datasets), Rows, Columns); frame ``i`` belongs to ``source_datasets[i]``.

    Raises:
        DicomSegError: if the datasets are not one series with geometry, or a slice does not fall on the mask's grid
            (wrong affine, resampled mask, or a slice outside the mask's volume).

    Example:
        >>> frames = frames_from_volume(mask, affine, datasets)  # doctest: +SKIP
        >>> write_dicom_seg(frames, datasets, "out/seg.dcm")  # doctest: +SKIP
    """
    _check_sources(source_datasets)
    volume = convert_to_numpy(mask.detach().cpu() if isinstance(mask, torch.Tensor) else mask)
    if volume.ndim == 4 and volume.shape[0] == 1:
        volume = volume[0]
    if volume.ndim != 3:
        raise DicomSegError(f"mask must be (X, Y, Z) or (1, X, Y, Z), got shape {tuple(mask.shape)}.")
    aff = np.asarray(convert_to_numpy(affine), dtype=np.float64)
    if aff.shape != (4, 4) or not np.all(np.isfinite(aff)) or abs(np.linalg.det(aff[:3, :3])) < 1e-12:
        raise DicomSegError(f"affine must be a finite, non-singular 4x4 matrix, got {aff.tolist()}.")
    try:
        geometry = SourceGeometry.from_datasets(source_datasets)
    except ValueError as err:
        raise DicomSegError(f"source datasets are not one series grid: {err}") from err
    rows, cols = geometry.rows, geometry.columns
    frames = np.zeros((len(source_datasets), rows, cols), dtype=bool)
    for i, (ds, coords) in enumerate(zip(source_datasets, source_pixel_coordinates(aff, geometry), strict=True)):
        coords = coords.reshape(3, rows, cols)
        off_grid = float(np.abs(coords - np.rint(coords)).max())
        if off_grid > tolerance:
            raise DicomSegError(
                f"slice {_describe(ds)} does not lie on the mask's voxel grid (pixel centres are up to {off_grid:.3f} "
                "voxels off); the mask must be on the series' native grid, with the affine of that grid."
            )
        index = [np.rint(coords[k]).astype(np.intp) for k in range(3)]
        outside = [k for k in range(3) if index[k].min() < 0 or index[k].max() >= volume.shape[k]]
        if outside:
            raise DicomSegError(
                f"slice {_describe(ds)} falls outside the mask of shape {volume.shape} (axis {outside[0]}); "
                "the mask and the datasets are not the same series."
            )
        frames[i] = volume[index[0], index[1], index[2]] != 0
    return frames


def _header_copy(ds: pydicom.Dataset) -> pydicom.Dataset:
    """A new dataset with the source's header elements (shared, not copied), missing type 2 attributes added empty."""
    header = pydicom.Dataset()
    for element in ds:
        if element.tag.group != 0x7FE0:  # leave the pixel data out
            header.add(element)
    for keyword in _PATIENT_STUDY_TYPE2:
        if keyword not in header:
            setattr(header, keyword, "")
    return header


def write_dicom_seg(
    frames: NdarrayOrTensor,
    source_datasets: Sequence[pydicom.Dataset],
    output_path: str | os.PathLike,
    segment_label: str = "Cranial cavity",
    series_description: str = "Cranial cavity segmentation",
    series_number: int = 900,
    algorithm_name: str = "brain_ct_convlstm_segmentation",
    algorithm_version: str | None = None,
    algorithm_family: str = "ai",
    manufacturer: str = "MONAI bundle brain_ct_convlstm_segmentation",
) -> Path:
    """Write a binary DICOM SEG with one "Cranial cavity" segment referencing the source CT series, atomically.

    Args:
        frames: mask frames (len(source_datasets), Rows, Columns), frame ``i`` on ``source_datasets[i]``'s pixel
            grid (rows, columns as in its ``pixel_array``); non-zero = inside. See :func:`frames_from_volume`.
        source_datasets: the CT slices of one series (pydicom datasets; headers read with
            ``stop_before_pixels=True`` are enough). They are not modified.
        output_path: file to write (``.dcm`` suggested); its folder is created. An existing file is replaced.
        segment_label: SegmentLabel. Defaults to "Cranial cavity".
        series_description: SeriesDescription of the SEG series. Defaults to "Cranial cavity segmentation".
        series_number: SeriesNumber of the SEG series. Defaults to 900.
        algorithm_name: AlgorithmName. Defaults to "brain_ct_convlstm_segmentation".
        algorithm_version: AlgorithmVersion. Defaults to None: the bundle's version.
        algorithm_family: "ai" (the network) or "morphology" (the classical pseudo-label pipeline). Defaults to "ai".
        manufacturer: Manufacturer of the SEG. Defaults to "MONAI bundle brain_ct_convlstm_segmentation".

    Returns:
        The path written.

    Raises:
        DicomSegError: on frames of the wrong shape, datasets that are not one series with geometry, or a bad
            ``algorithm_family``.

    Example:
        >>> datasets = [pydicom.dcmread(p, stop_before_pixels=True) for p in sorted(series_dir.glob("*.dcm"))]
        >>> write_dicom_seg(mask_frames, datasets, "out/case_seg.dcm")  # doctest: +SKIP
    """
    import highdicom as hd

    from bundle import __version__

    _check_sources(source_datasets)
    if algorithm_family not in ALGORITHM_FAMILIES:
        raise DicomSegError(f"algorithm_family must be one of {sorted(ALGORITHM_FAMILIES)}, got {algorithm_family!r}.")
    array = convert_to_numpy(frames.detach().cpu() if isinstance(frames, torch.Tensor) else frames)
    expected = (len(source_datasets), int(source_datasets[0].Rows), int(source_datasets[0].Columns))
    if array.shape != expected:
        raise DicomSegError(
            f"frames must have shape (slices, Rows, Columns) = {expected} to match the source datasets, "
            f"got {array.shape}."
        )
    binary = array != 0
    omit_empty = bool(binary.any())
    if not omit_empty:
        logger.warning("the mask is empty; the DICOM SEG stores all %d (empty) frames", len(source_datasets))

    description = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label=segment_label,
        segmented_property_category=CRANIAL_CAVITY_CATEGORY,
        segmented_property_type=CRANIAL_CAVITY_TYPE,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=hd.AlgorithmIdentificationSequence(
            name=algorithm_name, family=ALGORITHM_FAMILIES[algorithm_family], version=algorithm_version or __version__
        ),
        display_color=hd.color.CIELabColor.from_rgb(255, 165, 0),
    )
    with warnings.catch_warnings():  # anonymised sources often carry one-component names; highdicom warns on them
        warnings.filterwarnings("ignore", message=".*unlikely to represent the intended person name.*")
        seg = hd.seg.Segmentation(
            source_images=[_header_copy(ds) for ds in source_datasets],
            pixel_array=binary.astype(np.uint8),
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=[description],
            series_instance_uid=hd.UID(),
            series_number=series_number,
            sop_instance_uid=hd.UID(),
            instance_number=1,
            manufacturer=manufacturer,
            manufacturer_model_name=algorithm_name,
            software_versions=algorithm_version or __version__,
            device_serial_number="0",
            series_description=series_description,
            omit_empty_frames=omit_empty,
        )
    path = Path(output_path)
    with atomic_output(path) as tmp:
        seg.save_as(tmp, enforce_file_format=True)
    logger.info("DICOM SEG written: %s (%d frames)", path, int(seg.NumberOfFrames))
    return path
