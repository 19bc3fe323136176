"""Hip frame: THE definition of the hip-bone reference frame used to locate the sacral tumour.

This module is the one implementation used by training, inference and validation.

Input: a label map on a :class:`core.volume.Volume` grid (D-H-W array, affine index -> LPS mm) with
label 1 = hip bone on the patient's left and 2 = hip bone on the patient's right (3 = sacral tumour).
Labels should already be cleaned with :func:`core.postprocess.keep_largest_per_label`.

Definition of the hip frame (all positions LPS mm, DICOM patient coordinates):

* Centroids ``c_L``, ``c_R``: mean LPS position of the voxel centres of label 1 and of label 2
  (volume-weighted: every voxel of one grid has the same volume).
* Origin ``O = (c_L + c_R) / 2``.
* ``e_x = (c_L - c_R) / |c_L - c_R|``: unit vector from the right to the left centroid
  (towards the patient's left, ~ +x LPS).
* ``e_z``: the superior direction ``(0, 0, 1)`` LPS made orthogonal to ``e_x`` (Gram-Schmidt), unit.
* ``e_y = e_z x e_x``: towards the patient's back (~ +y LPS). ``(e_x, e_y, e_z)`` is orthonormal and
  right-handed, like LPS, so the frame is LPS rotated to the pelvis (no reflection).
* Distances in mm of a point ``p`` (LPS mm): ``(dx, dy, dz) = A (p - O)`` where ``A`` has rows
  ``e_x, e_y, e_z`` (:meth:`HipFrame.to_frame_mm`).
* Normalised, dimensionless ``(u, v, w) = (dx / s_x, dy / s_y, dz / s_z)`` (:meth:`HipFrame.to_normalised`):
  ``s_x = |c_L - c_R|`` (mm); ``s_y = 4 sd_y``, ``s_z = 4 sd_z`` where ``sd_y``, ``sd_z`` are the standard
  deviations (mm) of the projections of all hip-bone voxel centres (labels 1 and 2) on ``e_y``, ``e_z``.
  ``4 sd`` is about the 2.5-97.5 percentile span of a normal distribution (3.92 sd), so the scale is
  the "hip-bone box" height/depth (1.79 semi-axes for a uniform ellipsoid).

Why ``4 sd`` rather than the 2.5-97.5 percentile span: both are equally simple, scale with patient
size and are invariant to translation, slice order and rotation about the superior axis, but a
percentile of voxel centres is quantised to the voxel grid (it jumps by whole slices), whereas the
sd is not (Sheppard: sd^2 + h^2/12). On the analytic test scene rasterised on grids from 0.8x0.8x1
to 1x1x5 mm, the percentile span was off by up to 2.7 %, the sd by <= 0.4 %. The sd weighs outliers
more (a spur holding 1 % of the bone at 3 sd raises it by ~4 %), which is acceptable because labels are
cleaned to their largest component first. Both need the whole hip bone in the scan: check
:func:`hip_bone_truncated`.

Orientation checks: the frame is refused (:class:`HipFrameError`) when a side is missing or smaller
than ``min_volume_ml`` (default 5 mL), or when ``e_x`` is more than 45 degrees from LPS +x (swapped
left/right labels or a nonsensical segmentation; in DICOM patient coordinates the patient's left is
+x whatever the patient position on the table).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from core.volume import Volume, bounding_box

__all__ = [
    "FrameRegion", "HipFrame", "HipFrameError", "NoTumourError", "hip_frame_from_labels", "hip_bone_truncated",
    "truncated_faces", "tumour_location",
]

SUPERIOR_LPS = np.array([0.0, 0.0, 1.0])
SD_FACTOR = 4.0  # s_y = 4 sd_y, s_z = 4 sd_z
MAX_AXIS_ANGLE_DEG = 45.0


class HipFrameError(ValueError):
    """The hip frame cannot be built from these labels (message: one-line reason)."""


class NoTumourError(ValueError):
    """The label map has no tumour voxel, so there is nothing to locate."""


def _ro(a: Any, shape: tuple[int, ...]) -> np.ndarray:
    arr = np.array(a, dtype=np.float64)
    if arr.shape != shape or not np.all(np.isfinite(arr)):
        raise ValueError(f"expected finite array of shape {shape}, got {arr.shape}")
    arr.setflags(write=False)
    return arr


@dataclass(frozen=True, eq=False)
class HipFrame:
    """The hip frame (see module docstring). Immutable; arrays are read-only float64.

    Attributes:
        origin_lps: (3,) origin O, LPS mm.
        axes: (3, 3) rows e_x (patient left), e_y (posterior), e_z (superior), unit vectors in LPS.
        scale_mm: (3,) s_x (centroid distance), s_y, s_z (4 sd of hip-bone projections), mm.
        left_centroid_lps: (3,) centroid of the left hip bone (label 1), LPS mm.
        right_centroid_lps: (3,) centroid of the right hip bone (label 2), LPS mm.
    """

    origin_lps: np.ndarray
    axes: np.ndarray
    scale_mm: np.ndarray
    left_centroid_lps: np.ndarray
    right_centroid_lps: np.ndarray

    def __post_init__(self) -> None:
        for name, shape in (("origin_lps", (3,)), ("axes", (3, 3)), ("scale_mm", (3,)),
                            ("left_centroid_lps", (3,)), ("right_centroid_lps", (3,))):
            object.__setattr__(self, name, _ro(getattr(self, name), shape))
        if not np.allclose(self.axes @ self.axes.T, np.eye(3), atol=1e-6) or np.linalg.det(self.axes) < 0:
            raise ValueError("axes must be orthonormal and right-handed (rows e_x, e_y, e_z)")
        if np.any(self.scale_mm <= 0):
            raise ValueError(f"scale_mm must be positive, got {self.scale_mm}")

    def to_frame_mm(self, p_lps: np.ndarray) -> np.ndarray:
        """(..., 3) LPS mm points -> (..., 3) hip-frame distances (dx, dy, dz) in mm."""
        p = np.asarray(p_lps, dtype=np.float64)
        if p.shape[-1:] != (3,):
            raise ValueError(f"points must have shape (..., 3), got {p.shape}")
        return (p - self.origin_lps) @ self.axes.T

    def to_normalised(self, p_lps: np.ndarray) -> np.ndarray:
        """(..., 3) LPS mm points -> (..., 3) dimensionless hip-frame coordinates (u, v, w)."""
        return self.to_frame_mm(p_lps) / self.scale_mm

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (lists of floats; mm, LPS)."""
        return {"origin_lps_mm": self.origin_lps.tolist(), "axes_lps": self.axes.tolist(),
                "scale_mm": self.scale_mm.tolist(), "left_centroid_lps_mm": self.left_centroid_lps.tolist(),
                "right_centroid_lps_mm": self.right_centroid_lps.tolist()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> HipFrame:
        """Inverse of :meth:`to_dict`."""
        return cls(d["origin_lps_mm"], d["axes_lps"], d["scale_mm"], d["left_centroid_lps_mm"],
                   d["right_centroid_lps_mm"])


@dataclass(frozen=True)
class FrameRegion:
    """A box in normalised hip-frame coordinates ``(u, v, w)`` (dimensionless, see module docstring).

    Used as the anatomical domain of sacral tumours: the tumour model's ``metadata.json`` stores, as
    ``sacral_region``, the box around the training tumours' centroids (:meth:`around`), and the application
    keeps the largest tumour component whose centroid lies in it (``core.postprocess.merge_structures``).
    """

    low: tuple[float, float, float]
    high: tuple[float, float, float]

    def __post_init__(self) -> None:
        lo, hi = (tuple(float(x) for x in v) for v in (self.low, self.high))
        if len(lo) != 3 or len(hi) != 3 or not all(np.isfinite(lo + hi)) or any(a >= b for a, b in zip(lo, hi)):
            raise ValueError(f"region needs finite low < high on u, v, w; got low {lo}, high {hi}")
        object.__setattr__(self, "low", lo)
        object.__setattr__(self, "high", hi)

    def contains(self, uvw: Sequence[float] | np.ndarray) -> bool:
        """True when the point ``(u, v, w)`` lies in the box (bounds included)."""
        return all(a <= float(x) <= b for a, x, b in zip(self.low, uvw, self.high))

    @classmethod
    def around(cls, locations: np.ndarray, margin: float) -> FrameRegion:
        """The bounding box of ``locations`` ((N, 3) normalised ``(u, v, w)``), widened by ``margin`` on each side."""
        pts = np.asarray(locations, dtype=np.float64)
        if pts.ndim != 2 or pts.shape[1] != 3 or len(pts) == 0:
            raise ValueError(f"locations must have shape (N>0, 3), got {pts.shape}")
        return cls(tuple(pts.min(axis=0) - margin), tuple(pts.max(axis=0) + margin))



def _voxel_centres_lps(labels: Volume, mask: np.ndarray) -> np.ndarray:
    """(N, 3) LPS mm positions of the voxel centres where ``mask`` is True (in C order of the D-H-W grid)."""
    # the mask's bounding box first: a search in the box is about 3x faster than one in the whole grid
    # (a 512 x 512 x 300 series: 0.06 s instead of 0.22 s per structure)
    box = bounding_box(mask)
    if box is None:
        return np.empty((0, 3))
    idx = np.stack(np.nonzero(mask[box]), axis=1).astype(np.float64)
    idx += np.array([b.start for b in box], dtype=np.float64)
    return labels.index_to_lps(idx)


def _check_labels(labels: Volume) -> None:
    if not isinstance(labels, Volume):
        raise TypeError(f"labels must be a core.volume.Volume, got {type(labels).__name__}")
    if not (np.issubdtype(labels.array.dtype, np.integer) or labels.array.dtype == bool):
        raise ValueError(f"label map must have an integer dtype, got {labels.array.dtype}")


def hip_frame_from_labels(labels: Volume, left_value: int = 1, right_value: int = 2,
                          min_volume_ml: float = 5.0) -> HipFrame:
    """Build the hip frame from a label map.

    Args:
        labels: label map Volume (D-H-W, LPS affine); ``left_value`` = patient-left hip bone,
            ``right_value`` = patient-right hip bone.
        min_volume_ml: each hip bone must have at least this volume (mL).

    Raises:
        HipFrameError: a side missing or < ``min_volume_ml``, coincident centroids, or the
            left-right axis more than 45 degrees from LPS +x (labels swapped?).
    """
    _check_labels(labels)
    arr = labels.array
    points = {}
    for side, value in (("left", left_value), ("right", right_value)):
        m = arr == value
        vol_ml = float(np.count_nonzero(m)) * labels.voxel_volume_ml
        if vol_ml < min_volume_ml:
            raise HipFrameError(f"{side} hip bone (label {value}) missing or too small: "
                                f"{vol_ml:.1f} mL < {min_volume_ml:g} mL")
        points[side] = _voxel_centres_lps(labels, m)
    c_l = points["left"].mean(axis=0)
    c_r = points["right"].mean(axis=0)
    s_x = float(np.linalg.norm(c_l - c_r))
    if s_x < 1.0:
        raise HipFrameError(f"left and right hip-bone centroids coincide ({s_x:.2f} mm apart)")
    e_x = (c_l - c_r) / s_x
    angle = float(np.degrees(np.arccos(np.clip(e_x[0], -1.0, 1.0))))
    if angle > MAX_AXIS_ANGLE_DEG:
        raise HipFrameError(f"right-to-left hip axis is {angle:.0f} deg from LPS +x "
                            f"(> {MAX_AXIS_ANGLE_DEG:g}): labels swapped or implausible")
    e_z = SUPERIOR_LPS - (SUPERIOR_LPS @ e_x) * e_x
    e_z /= np.linalg.norm(e_z)
    e_y = np.cross(e_z, e_x)
    axes = np.stack([e_x, e_y, e_z])
    both = np.concatenate([points["left"], points["right"]])
    proj = both @ axes[1:].T  # (N, 2) projections on e_y, e_z, mm
    s_yz = SD_FACTOR * proj.std(axis=0)
    if np.any(s_yz < 1.0):
        raise HipFrameError("hip bones have no extent along e_y or e_z")
    return HipFrame(origin_lps=(c_l + c_r) / 2, axes=axes, scale_mm=np.array([s_x, *s_yz]),
                    left_centroid_lps=c_l, right_centroid_lps=c_r)


FACE_NAMES = ("d_first", "d_last", "h_first", "h_last", "w_first", "w_last")


def truncated_faces(labels: Volume, values: Sequence[int] = (1, 2),
                    margin_mm: float | Sequence[float] = 0.0) -> tuple[str, ...]:
    """Names of the grid faces touched by voxels of ``values``, or lying within ``margin_mm`` of them.

    Faces are the outer voxel layers of the D-H-W grid: ``d_first``/``d_last`` (first/last slice,
    for an axial series the inferior/superior end of the scan coverage), ``h_first``/``h_last``
    (first/last row), ``w_first``/``w_last`` (first/last column) = edges of the reconstructed field
    of view. Bone cut by a circular field of view inside the square grid is not detected.

    Args:
        labels: label map Volume (D-H-W, LPS affine).
        values: the labels to look for.
        margin_mm: distance (mm, >= 0) from a face's outer voxel centres within which a voxel of ``values``
            counts as touching it: 0 checks the outer layer only; a segmentation made on a coarser model grid
            cannot place its boundary closer than about one model voxel, so a margin of one model voxel
            (e.g. 3 mm) recognises a structure cut by the edge. Each face checks at least its outer layer.
            One value for all axes, or three (D-H-W).
    """
    _check_labels(labels)
    if isinstance(margin_mm, (int, float, np.number)):
        margins = [float(margin_mm)] * 3
    else:
        margins = [float(m) for m in margin_mm]
    if len(margins) != 3 or not all(np.isfinite(m) and m >= 0 for m in margins):
        raise ValueError(f"margin_mm must be a finite number >= 0 (or three, D-H-W), got {margin_mm}")
    arr = labels.array
    vals = [int(v) for v in values]
    # layers within the margin per axis: voxel centres 0 .. k-1 lie within k-1 spacings of the outer centre
    k = [1 + int(np.floor(m / float(s) + 1e-6)) for m, s in zip(margins, labels.spacing)]
    layers = (arr[:k[0]], arr[-k[0]:], arr[:, :k[1]], arr[:, -k[1]:], arr[:, :, :k[2]], arr[:, :, -k[2]:])
    return tuple(name for name, layer in zip(FACE_NAMES, layers) if np.isin(layer, vals).any())


def hip_bone_truncated(labels: Volume, values: Sequence[int] = (1, 2)) -> bool:
    """True when hip-bone voxels touch any of the six faces of the scanned grid (see
    :func:`truncated_faces`), i.e. the bone is cut by the scan edge and the hip frame is unreliable."""
    return bool(truncated_faces(labels, values))


def tumour_location(labels: Volume, tumour_value: int = 3, frame: HipFrame | None = None) -> dict[str, list[float]]:
    """Locate the tumour centroid in the hip frame.

    Args:
        labels: label map Volume (D-H-W, LPS affine).
        tumour_value: tumour label.
        frame: the hip frame; built from ``labels`` (labels 1 and 2) when None.

    Returns:
        ``{"centroid_lps_mm": [x, y, z], "location_hip_frame": [u, v, w] (dimensionless),
        "location_hip_frame_mm": [dx, dy, dz] (mm)}``; centroid of tumour voxel centres.

    Raises:
        NoTumourError: no voxel has ``tumour_value``.
        HipFrameError: ``frame`` is None and the frame cannot be built.
    """
    _check_labels(labels)
    pts = _voxel_centres_lps(labels, labels.array == tumour_value)
    if len(pts) == 0:
        raise NoTumourError(f"no voxel with tumour label {tumour_value}")
    if frame is None:
        frame = hip_frame_from_labels(labels)
    c = pts.mean(axis=0)
    return {"centroid_lps_mm": c.tolist(), "location_hip_frame": frame.to_normalised(c).tolist(),
            "location_hip_frame_mm": frame.to_frame_mm(c).tolist()}
