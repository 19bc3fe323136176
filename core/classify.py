"""Tumour classification: the crop given to the classifier and the fused prediction.

The crop (used identically at training and inference) is a cube in canonical LPS orientation centred on
the centre of the tumour's bounding box, with side = largest bounding-box extent + 2 x ``margin_mm``
(at least ``min_side_mm``), resampled to ``crop_size`` voxels (D-H-W). Channel 0 is the CT scaled by
the crop's ``intensity`` window; channel 1 the tumour mask (0/1). The absolute size is lost by design: the tumour
volume enters through the tabular features.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import SimpleITK as sitk

from core.model_metadata import CropSpec
from core.segment import block_mean, scale_intensity
from core.volume import Volume, bounding_box, to_sitk


def tumour_crop(ct: Volume, tumour_mask: np.ndarray, spec: CropSpec) -> np.ndarray:
    """(2, D, H, W) float32 classifier input from ``ct`` (HU, D-H-W) and a boolean mask on the same grid.

    ``spec`` is the classifier metadata's ``crop``: ``size`` (D-H-W voxels), ``margin_mm``, ``min_side_mm``,
    ``intensity`` (clip/scale window in HU) and ``antialias`` (block-average the CT to about the crop's spacing
    first, :func:`core.segment.block_mean`).
    """
    if tumour_mask.shape != ct.shape:
        raise ValueError("tumour mask and CT grids differ")
    box = bounding_box(tumour_mask)
    if box is None:
        raise ValueError("empty tumour mask: nothing to classify")
    d, h, w = ((b.start, b.stop - 1) for b in box)
    corners = np.array([[a, b, c] for a in d for b in h for c in w], float)
    lps = ct.index_to_lps(corners)
    centre = (lps.min(0) + lps.max(0)) / 2.0
    side = max(float((lps.max(0) - lps.min(0)).max()) + 2.0 * spec.margin_mm, spec.min_side_mm)
    size_dhw = list(spec.size)
    size_xyz = size_dhw[::-1]
    spacing_xyz = [side / n for n in size_xyz]
    # Canonical LPS axes: x to the left, y posterior, z superior (identity direction).
    origin = centre - 0.5 * np.array([(n - 1) * s for n, s in zip(size_xyz, spacing_xyz)])
    # Only the voxels the cube's samples can reach (its index box on the CT grid, plus two voxels for the linear
    # interpolation) are converted: a few MB instead of the whole series, and the same samples.
    far = origin + np.array([(n - 1) * s for n, s in zip(size_xyz, spacing_xyz)])
    cube = np.array([[x, y, z] for x in (origin[0], far[0]) for y in (origin[1], far[1]) for z in (origin[2], far[2])])
    reach = ct.lps_to_index(cube)
    # With anti-aliasing, blocks of floor(crop spacing / CT spacing) voxels are averaged along each CT axis (the
    # crop's spacing along the LPS axis that CT axis runs closest to); the index box grows by one block each side.
    factor = np.ones(3, dtype=int)
    if spec.antialias:
        lps_axis = np.abs(ct.direction).argmax(axis=0)              # per D-H-W axis: its LPS axis (x, y, z)
        crop_sp = np.array(spacing_xyz)[lps_axis]
        factor = np.maximum(1, np.floor(crop_sp / ct.spacing + 1e-6).astype(int))
    lo = np.clip(np.floor(reach.min(0)).astype(int) - 2 * factor, 0, ct.shape)
    hi = np.clip(np.ceil(reach.max(0)).astype(int) + 3 * factor, 0, ct.shape)
    ct, tumour_mask = ct.sub_volume(lo, hi), tumour_mask[tuple(slice(a, b) for a, b in zip(lo, hi))]

    def _resample(img: sitk.Image, interp: int, fill: float) -> np.ndarray:
        return sitk.GetArrayFromImage(sitk.Resample(
            img, size_xyz, sitk.Transform(), interp, tuple(origin), spacing_xyz,
            (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0), fill, sitk.sitkFloat32))
    ct_img = sitk.Cast(to_sitk(ct), sitk.sitkFloat32)
    mask_img = sitk.Cast(to_sitk(ct.with_array(tumour_mask.astype(np.uint8))), sitk.sitkFloat32)
    if spec.antialias:  # the segmentation's box filter (core.segment), CT only; the mask keeps its own grid
        ct_img = block_mean(ct_img, [float(s) for s in (factor * ct.spacing)[::-1]])
    image = scale_intensity(_resample(ct_img, sitk.sitkLinear, -1024.0), spec.intensity)
    mask = (_resample(mask_img, sitk.sitkLinear, 0.0) >= 0.5).astype(np.float32)
    return np.stack([image, mask]).astype(np.float32)


def probabilities_by_class(p: np.ndarray, classes: Sequence[str]) -> dict[str, float]:
    """Map a probability vector to {class name: probability} in the metadata's class order."""
    if len(p) != len(classes):
        raise ValueError(f"{len(p)} probabilities for {len(classes)} classes")
    return {c: float(v) for c, v in zip(classes, p)}
