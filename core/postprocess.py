"""Connected-component clean-up of segmentation masks, identical at training and inference.

All arrays are D-H-W voxel grids (see :mod:`core.volume`); connectivity is in voxel index space and
does not depend on spacing. "Largest" means the most voxels, i.e. the largest volume on one grid.
Connectivity: 26 (face, edge or corner neighbours; SimpleITK ``fullyConnected=True``, the default)
or 6 (face neighbours only). Ties are broken deterministically: ITK's RelabelComponent orders
equal-size components by their raster-order label, so the one whose first voxel comes first in
C order of the D-H-W array wins.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import SimpleITK as sitk

from core.hip_frame import FrameRegion, HipFrame, HipFrameError, hip_frame_from_labels
from core.volume import Volume, bounding_box

__all__ = ["Merged", "largest_component", "keep_largest_per_label", "merge_structures"]


def _check_connectivity(connectivity: int) -> bool:
    if connectivity not in (6, 26):
        raise ValueError(f"connectivity must be 6 or 26, got {connectivity}")
    return connectivity == 26


def _components_by_size(mask: np.ndarray, fully_connected: bool) -> np.ndarray:
    """int32 D-H-W map of the components of a bool array, numbered 1, 2, ... by decreasing size (no checks)."""
    relabel = sitk.RelabelComponentImageFilter()
    relabel.SetSortByObjectSize(True)
    cc_filter = sitk.ConnectedComponentImageFilter()
    cc_filter.SetFullyConnected(fully_connected)
    return sitk.GetArrayFromImage(relabel.Execute(cc_filter.Execute(sitk.GetImageFromArray(mask.astype(np.uint8)))))


def _largest(mask: np.ndarray, fully_connected: bool) -> np.ndarray:
    """Largest component of a bool D-H-W array (no checks)."""
    if not mask.any():
        return np.zeros(mask.shape, dtype=bool)
    return _components_by_size(mask, fully_connected) == 1


def largest_component(mask: np.ndarray, connectivity: int = 26) -> np.ndarray:
    """Keep only the largest connected component of a binary mask.

    Args:
        mask: D-H-W array; non-zero voxels are foreground (bool or integer).
        connectivity: 26 (default) or 6, see the module docstring.

    Returns:
        New bool D-H-W array of the same shape; all False when ``mask`` is empty.
    """
    mask = np.asarray(mask)
    if mask.ndim != 3:
        raise ValueError(f"mask must be 3-D (D, H, W), got shape {mask.shape}")
    fully = _check_connectivity(connectivity)
    fg = mask != 0
    box = bounding_box(fg)
    out = np.zeros(fg.shape, dtype=bool)
    if box is None:
        return out
    out[box] = _largest(fg[box], fully)
    return out


def keep_largest_per_label(labels: np.ndarray, values: Sequence[int], connectivity: int = 26) -> np.ndarray:
    """For each label value in ``values`` keep only its largest connected component.

    Voxels of other components of that value are set to 0 (background); labels not listed in
    ``values`` are copied unchanged. Each value is processed on its own (a hip bone touching the
    tumour does not merge with it).

    Args:
        labels: D-H-W integer label map with values 0..255.
        values: label values to clean, e.g. ``(1, 2, 3)``.
        connectivity: 26 (default) or 6.

    Returns:
        New uint8 D-H-W label map; the input is not modified.
    """
    labels = np.asarray(labels)
    if labels.ndim != 3:
        raise ValueError(f"labels must be 3-D (D, H, W), got shape {labels.shape}")
    if not (np.issubdtype(labels.dtype, np.integer) or labels.dtype == bool):
        raise ValueError(f"labels must have an integer dtype, got {labels.dtype}")
    if labels.size and (labels.min() < 0 or labels.max() > 255):
        raise ValueError("label values must lie in 0..255 (uint8 label map)")
    fully = _check_connectivity(connectivity)
    out = labels.astype(np.uint8, copy=True)
    for value in dict.fromkeys(int(v) for v in values):  # unique, order kept
        if not 1 <= value <= 255:
            raise ValueError(f"label value {value} must lie in 1..255")
        m = out == value
        box = bounding_box(m)
        if box is None:
            continue
        sub = m[box]
        keep = _largest(sub, fully)
        region = out[box]  # view
        region[sub & ~keep] = 0
    return out


HIP_LEFT, HIP_RIGHT, TUMOUR = 1, 2, 3


class Merged(NamedTuple):
    """Result of :func:`merge_structures`."""

    labels: np.ndarray                     #: uint8 D-H-W map: 0 background, 1/2 hip bone left/right, 3 tumour
    rejected_tumour_ml: tuple[float, ...]  #: larger tumour components (mL) left out: centroid outside the region
    #: False when a region was given but no hip frame could be built (a hip bone missing): every tumour
    #: component is then left out (``rejected_tumour_ml``), as none can be placed in the sacral region
    located: bool = True
    #: the hip frame of the cleaned hip bones (labels 1 and 2), built once here when the grid's affine was given;
    #: None without an affine or when the hip bones give none (then ``frame_error`` says why)
    frame: HipFrame | None = None
    frame_error: str | None = None


def _drop_tumour(labels: np.ndarray, affine: np.ndarray) -> tuple[float, ...]:
    """Remove every tumour voxel of ``labels`` (in place); the components' volumes (mL), largest first."""
    tumour = labels == TUMOUR
    box = bounding_box(tumour)
    if box is None:
        return ()
    comps = _components_by_size(tumour[box], True)
    counts = np.bincount(comps[comps > 0])[1:]
    labels[tumour] = 0
    voxel_ml = Volume(labels, affine).voxel_volume_ml
    return tuple(round(float(c) * voxel_ml, 3) for c in sorted(counts, reverse=True))


def _tumour_in_region(labels: Volume, region: FrameRegion, frame: HipFrame) -> tuple[np.ndarray, tuple[float, ...]]:
    """The largest tumour component whose centroid lies in ``region`` of ``frame``."""
    tumour = labels.array == TUMOUR
    out = np.zeros(tumour.shape, dtype=bool)
    box = bounding_box(tumour)
    if box is None:
        return out, ()
    comps = _components_by_size(tumour[box], True)
    n = int(comps.max())
    idx = np.nonzero(comps)
    counts = np.bincount(comps[idx], minlength=n + 1).astype(np.float64)
    offset = [s.start for s in box]
    centres = np.stack([np.bincount(comps[idx], weights=idx[a] + offset[a], minlength=n + 1) for a in range(3)], axis=1)
    rejected = []
    for c in range(1, n + 1):
        uvw = frame.to_normalised(labels.index_to_lps(centres[c:c + 1] / counts[c])[0])
        if region.contains(uvw):
            out[box] = comps == c
            break
        rejected.append(round(float(counts[c]) * labels.voxel_volume_ml, 3))
    return out, tuple(rejected)


def merge_structures(hip_labels: np.ndarray, tumour_labels: np.ndarray, *, affine: np.ndarray | None = None,
                     region: FrameRegion | None = None) -> Merged:
    """The analysis label map from the two segmentations (both D-H-W on the same grid), as the app builds it.

    Hip-bone values 1 (left) and 2 (right) are taken from ``hip_labels``; voxels where ``tumour_labels`` is
    3 become tumour (the tumour wins where both claim a voxel); then each structure keeps its largest
    connected component (26-connected). With ``region`` (a box in the hip frame, the tumour model's
    ``sacral_region``) and ``affine`` (the grid's D-H-W index -> LPS mm), the tumour keeps instead its largest
    component whose centroid lies in the region, so that a larger false positive outside the sacral domain
    (e.g. a fluid-filled bowel loop in front of the hip joint) does not displace the tumour; the components
    passed over are reported. Without a hip frame (a hip bone missing) no tumour component can be placed in the
    region: all are left out and reported (``located`` False), so that no "sacral tumour" is drawn in a scan
    of, say, the thighs. Without ``region`` the plain largest component is kept. With ``affine`` the hip frame
    of the cleaned hip bones is returned too (``frame``, or ``frame_error``), so that later steps reuse it.
    Used by the application's post-processing step and by classifier training (``training.data``).
    """
    hip_labels, tumour_labels = np.asarray(hip_labels), np.asarray(tumour_labels)
    if hip_labels.shape != tumour_labels.shape:
        raise ValueError(f"hip labels {hip_labels.shape} and tumour labels {tumour_labels.shape} differ in shape")
    if hip_labels.dtype == np.uint8 and (HIP_LEFT, HIP_RIGHT) == (1, 2):  # the models' output: a copy, > 2 cleared
        labels = hip_labels.copy()
        labels[labels > HIP_RIGHT] = 0
    else:
        labels = np.where(np.isin(hip_labels, (HIP_LEFT, HIP_RIGHT)), hip_labels, 0).astype(np.uint8)
    labels[tumour_labels == TUMOUR] = TUMOUR
    if region is not None and affine is None:
        raise ValueError("a region needs the grid's affine")
    # with a region the tumour keeps its largest component in the region (below), not its largest overall
    labels = keep_largest_per_label(labels, (HIP_LEFT, HIP_RIGHT) if region is not None else (HIP_LEFT, HIP_RIGHT,
                                                                                                 TUMOUR))
    frame, frame_error = None, None
    if affine is not None:
        try:
            frame = hip_frame_from_labels(Volume(labels, affine), HIP_LEFT, HIP_RIGHT)
        except HipFrameError as e:
            frame_error = str(e)
    if region is None:
        return Merged(labels, (), frame=frame, frame_error=frame_error)
    assert affine is not None
    if frame is None:
        return Merged(labels, _drop_tumour(labels, affine), located=False, frame_error=frame_error)
    keep, rejected = _tumour_in_region(Volume(labels, affine), region, frame)
    labels[(labels == TUMOUR) & ~keep] = 0
    return Merged(labels, rejected, frame=frame)
