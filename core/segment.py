"""Segmentation: the one preprocessing used at training and inference, and sliding-window inference.

Model grid: the CT is reoriented to the canonical LPS orientation (SimpleITK ``DICOMOrient('LPS')``: index
x=w runs to patient left, y=h to posterior, z=d to superior) and resampled to the model's isotropic or
anisotropic spacing from the metadata's ``spacing_mm`` (given as D-H-W, mm). Intensities are clipped and scaled
as its ``intensity`` window says (:class:`core.model_metadata.SegmentationSpec`). Probabilities are resampled
back onto the *original* series grid with linear interpolation before the argmax, so the label map returned is
D-H-W on exactly the input's grid.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import SimpleITK as sitk
import torch

from core.inference import predict_probabilities
from core.model_metadata import IntensityWindow, ModelMetadata
from core.volume import Volume, bounding_box, from_sitk, to_sitk


def block_mean(img: sitk.Image, new_sp: Sequence[float]) -> sitk.Image:
    """Average blocks of ``floor(new / old)`` voxels along each axis (SimpleITK x, y, z order): a box filter that
    anti-aliases and shrinks the grid before the final linear resampling. The block grid keeps the physical
    centre of each block; a partial block at the far edge is dropped (less than one output voxel)."""
    old_sp = img.GetSpacing()
    f = [max(1, int(math.floor(n / o + 1e-6))) for o, n in zip(old_sp, new_sp)]
    if f == [1, 1, 1]:
        return img
    arr = sitk.GetArrayViewFromImage(img)               # z, y, x
    fz, fy, fx = f[2], f[1], f[0]
    nz, ny, nx = arr.shape[0] // fz, arr.shape[1] // fy, arr.shape[2] // fx
    if min(nz, ny, nx) < 1:
        return img
    a = arr[:nz * fz, :ny * fy, :nx * fx].reshape(nz, fz, ny, fy, nx, fx)
    pooled = a.mean(axis=(1, 3, 5), dtype=np.float32)
    out = sitk.GetImageFromArray(pooled)
    direction = np.array(img.GetDirection()).reshape(3, 3)
    shift = direction @ (np.array([(fi - 1) / 2.0 * o for fi, o in zip(f, old_sp)]))
    out.SetOrigin(tuple(np.array(img.GetOrigin()) + shift))
    out.SetSpacing(tuple(o * fi for o, fi in zip(old_sp, f)))
    out.SetDirection(img.GetDirection())
    return out


def canonical_resample(
    vol: Volume, spacing_dhw: Sequence[float], *, is_label: bool = False, fill: float = -1024.0,
    antialias: bool = False,
) -> Volume:
    """Reorient ``vol`` to canonical LPS and resample it to ``spacing_dhw`` (mm).

    The output grid covers the input's extent; CT uses linear interpolation with ``fill`` (HU) outside,
    label maps nearest neighbour with 0 outside. With ``antialias`` (CT only) blocks of ``floor(new / old)``
    voxels are first averaged along each axis (a box filter), so that a thin-slice, sharp-kernel series and a
    thick-slice soft one reach the model grid with about the same resolution and noise.
    Returns a Volume in the canonical orientation.
    """
    img = to_sitk(vol)
    if is_label:
        img = sitk.Cast(img, sitk.sitkUInt8)
    else:
        img = sitk.Cast(img, sitk.sitkFloat32)
    img = sitk.DICOMOrient(img, "LPS")
    new_sp = (float(spacing_dhw[2]), float(spacing_dhw[1]), float(spacing_dhw[0]))
    old_sp, old_size = img.GetSpacing(), img.GetSize()
    # (1e-3: a spacing of 2.99999 mm read from DICOM and 3.0 mm from NIfTI give the same grid)
    size = [max(1, int(math.floor(old_size[i] * old_sp[i] / new_sp[i] + 1e-3))) for i in range(3)]
    # Centre the new grid on the old one so that neither edge is favoured. The grid depends only on the input
    # grid and the spacing (never on anti-aliasing), so a CT and its label map land on the same grid.
    direction = np.array(img.GetDirection()).reshape(3, 3)
    old_extent = np.array([(old_size[i] - 1) * old_sp[i] for i in range(3)])
    new_extent = np.array([(size[i] - 1) * new_sp[i] for i in range(3)])
    origin = np.array(img.GetOrigin()) + direction @ ((old_extent - new_extent) / 2.0)
    if antialias and not is_label:
        img = block_mean(img, new_sp)
    out = sitk.Resample(
        img, size, sitk.Transform(), sitk.sitkNearestNeighbor if is_label else sitk.sitkLinear,
        tuple(origin), new_sp, img.GetDirection(), 0.0 if is_label else fill,
        sitk.sitkUInt8 if is_label else sitk.sitkFloat32,
        bool(antialias and not is_label),   # the block grid ends up to half a block inside: extend its edge
    )
    return from_sitk(out, vol.meta)


def scale_intensity(hu: np.ndarray, spec: IntensityWindow) -> np.ndarray:
    """Clip HU to [a_min, a_max] and map linearly to [b_min, b_max] (MONAI ScaleIntensityRange), float32."""
    a_min, a_max, b_min, b_max = spec.a_min, spec.a_max, spec.b_min, spec.b_max
    x = np.clip(hu.astype(np.float32), a_min, a_max)
    return ((x - a_min) / (a_max - a_min) * (b_max - b_min) + b_min).astype(np.float32)


def model_input(ct: Volume, metadata: ModelMetadata, grids: dict[tuple[float | bool, ...], Volume] | None = None
                ) -> tuple[Volume, np.ndarray]:
    """The canonical-grid CT and the network input (1, D, H, W) float32 for a segmentation model.

    ``grids`` (optional) caches canonical grids of this ``ct`` by spacing and anti-aliasing, so that models sharing
    them resample the series once. The model's ``antialias`` smooths before resampling (:func:`canonical_resample`).
    """
    seg = metadata.seg
    spacing, antialias = seg.spacing_mm, seg.antialias
    key = (*spacing, antialias)
    grid = grids.get(key) if grids is not None else None
    if grid is None:
        grid = canonical_resample(ct, spacing, antialias=antialias)
        if grids is not None:
            grids[key] = grid
    return grid, scale_intensity(grid.array, seg.intensity)[None]


def _foreground_box(fg: np.ndarray, margin: int = 2) -> tuple[slice, ...] | None:
    box = bounding_box(fg)
    if box is None:
        return None
    return tuple(slice(max(b.start - margin, 0), min(b.stop + margin, n)) for b, n in zip(box, fg.shape))


def _mapped_index_range(lo: np.ndarray, hi: np.ndarray, source: Volume, target: Volume,
                        pad: int) -> tuple[np.ndarray, np.ndarray]:
    """Index range ``[start, stop)`` (int, D-H-W) on ``target``'s grid that covers the box between the continuous
    indices ``lo`` and ``hi`` (D-H-W) of ``source``'s grid: the box's 8 corners mapped through LPS, widened by
    ``pad`` voxels on each side, clipped to ``target``'s shape. ``stop <= start`` on some axis when the box lies
    outside ``target``."""
    corners = np.array([[a, b, c] for a in (lo[0], hi[0]) for b in (lo[1], hi[1]) for c in (lo[2], hi[2])])
    idx = target.lps_to_index(source.index_to_lps(corners))
    start = np.maximum(np.floor(idx.min(0)) - pad, 0).astype(int)
    stop = np.minimum(np.ceil(idx.max(0)) + 1 + pad, target.shape).astype(int)
    return start, stop


def probabilities_to_labels(
    probs: np.ndarray, grid: Volume, target: Volume, label_values: Sequence[int], threshold: float = 0.05
) -> np.ndarray:
    """Resample foreground probabilities from the model grid onto ``target``'s grid and take the argmax.

    Args:
        probs: (C, D, H, W) softmax on ``grid`` (channel 0 = background).
        grid: the canonical model-grid Volume the probabilities live on.
        target: the original series Volume (its grid defines the output).
        label_values: output label value of each foreground channel 1..C-1.
    Returns:
        uint8 label map D-H-W on ``target``'s grid. Only the region where some foreground probability
        exceeds ``threshold`` is resampled (the rest is background), which bounds time and memory.
    """
    out = np.zeros(target.shape, dtype=np.uint8)
    box = _foreground_box(probs[1:].max(0) > threshold)
    if box is None:
        return out
    # Target-grid index box covering the model-grid foreground box's voxel centres, one voxel wider each way.
    t_lo, t_hi = _mapped_index_range(np.array([s.start for s in box], float),
                                     np.array([s.stop - 1 for s in box], float), grid, target, pad=1)
    if np.any(t_hi <= t_lo):
        return out
    sub_aff = target.affine.copy()
    sub_aff[:3, 3] = target.index_to_lps(t_lo[None].astype(float))[0]
    sub_shape = tuple(int(v) for v in t_hi - t_lo)
    ref = to_sitk(Volume(np.zeros(sub_shape, np.uint8), sub_aff))
    best = np.zeros(sub_shape, np.float32)
    label = np.zeros(sub_shape, np.uint8)
    fg_sum = np.zeros(sub_shape, np.float32)
    better = np.empty(sub_shape, bool)
    # In-place ufuncs with ``where=`` and array views, no boolean fancy indexing or copies: the same result
    # as the plain version, about 3x faster on a 512 x 512 x 300 grid (see docs/robustness.md, benchmark).
    for c, value in enumerate(label_values, start=1):
        src = to_sitk(grid.with_array(np.ascontiguousarray(probs[c], dtype=np.float32)))
        resampled = sitk.Resample(src, ref, sitk.Transform(), sitk.sitkLinear, 0.0)
        p = sitk.GetArrayViewFromImage(resampled)
        fg_sum += p
        np.greater(p, best, out=better)
        np.copyto(best, p, where=better)
        np.copyto(label, np.uint8(value), where=better)
        del p, resampled
    np.subtract(np.float32(1.0), fg_sum, out=fg_sum)  # now the background probability
    np.less_equal(best, fg_sum, out=better)
    np.copyto(label, np.uint8(0), where=better)  # background wins where its probability is highest
    out[tuple(slice(a, b) for a, b in zip(t_lo, t_hi))] = label
    return out


class Segmentation(NamedTuple):
    """Result of :func:`segment_with_probability`."""

    labels: np.ndarray        #: uint8 D-H-W on the input series' grid (the model's foreground label values)
    probability: Volume       #: float32 D-H-W on the model grid (canonical LPS): the largest foreground softmax


def segment_with_probability(ct: Volume, module: torch.nn.Module, metadata: ModelMetadata, device: torch.device,
                             grids: dict[tuple[float | bool, ...], Volume] | None = None) -> Segmentation:
    """Run one segmentation model on ``ct`` (HU, D-H-W, LPS): its label map on ``ct``'s grid and its foreground
    probability on the model grid (for :func:`mean_probability_in`).

    Output values are those of the model's foreground labels (``value`` > 0), in channel order.
    ``grids``: see :func:`model_input`.
    """
    grid, image = model_input(ct, metadata, grids)
    probs = predict_probabilities(module, image, metadata, device)
    values = [lab.value for lab in metadata.seg.foreground]
    if len(values) != probs.shape[0] - 1:
        raise ValueError(f"model has {probs.shape[0] - 1} foreground channels, metadata lists {len(values)} labels")
    return Segmentation(probabilities_to_labels(probs, grid, ct, values),
                        grid.with_array(np.ascontiguousarray(probs[1:].max(0), dtype=np.float32)))


def segment(ct: Volume, module: torch.nn.Module, metadata: ModelMetadata, device: torch.device,
            grids: dict[tuple[float | bool, ...], Volume] | None = None) -> np.ndarray:
    """Run one segmentation model on ``ct`` (HU, D-H-W, LPS). Returns uint8 labels D-H-W on ``ct``'s grid
    (:func:`segment_with_probability` without the probability)."""
    return segment_with_probability(ct, module, metadata, device, grids).labels


def mean_probability_in(mask: Volume, probability: Volume) -> float | None:
    """Mean of ``probability`` (a model-grid map, e.g. :attr:`Segmentation.probability`) over the model-grid
    voxels whose centre falls in ``mask`` (boolean, D-H-W, on any grid sharing its frame of reference, e.g. the
    series grid; nearest mask voxel): the structure's confidence measured on the grid the model predicted on, so
    that the same structure gives the same value whatever the series' resolution. A mask too small to hold a
    model-grid voxel centre takes instead, for each of its own voxels, the nearest model-grid voxel (centres
    outside the model grid count 0). None when the mask is empty.
    """
    m = np.asarray(mask.array, dtype=bool)
    box = bounding_box(m)
    if box is None:
        return None
    # Model-grid voxels whose centre can lie in the mask's bounding box (its voxels' outer faces).
    g_lo, g_hi = _mapped_index_range(np.array([s.start for s in box], float) - 0.5,
                                     np.array([s.stop for s in box], float) - 0.5, mask, probability, pad=0)
    if np.all(g_hi > g_lo):
        grid_idx = np.stack(np.meshgrid(*[np.arange(a, b) for a, b in zip(g_lo, g_hi)], indexing="ij"), -1)
        grid_idx = grid_idx.reshape(-1, 3)
        t = np.rint(mask.lps_to_index(probability.index_to_lps(grid_idx.astype(np.float64)))).astype(np.int64)
        ok = np.all((t >= 0) & (t < np.array(m.shape)), axis=1)
        inside = np.zeros(len(t), bool)
        inside[ok] = m[tuple(t[ok].T)]
        if inside.any():
            return float(probability.array[tuple(grid_idx[inside].T)].astype(np.float64).mean())
    idx = np.argwhere(m)
    g = np.rint(probability.lps_to_index(mask.index_to_lps(idx.astype(np.float64)))).astype(np.int64)
    ok = np.all((g >= 0) & (g < np.array(probability.shape)), axis=1)
    values = np.zeros(len(idx), np.float64)
    values[ok] = probability.array[tuple(g[ok].T)]
    return float(values.mean())
