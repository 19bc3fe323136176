"""Rendering: paint the scene onto the scan grid, then let the scanner acquire it.

Shapes are evaluated at every voxel centre of their bounding box (vectorised numpy, slabs of slices), with
analytic partial volume (box-filtered signed distance over one in-plane voxel); then
:func:`training.phantom.acquisition.acquire` adds artefacts, slice profile, kernel and noise.
"""
from __future__ import annotations

import math

import numpy as np

from core.volume import Volume, affine_from_dicom
from training.phantom.acquisition import acquire
from training.phantom.anatomy import Op, scene, trunk_ellipse
from training.phantom.params import PatientParams, ScanParams
from training.phantom.shapes import BBox, Obj
from training.phantom.tumour import margin_width_mm, residual_alpha, tumour_hu


class _Grid:
    """Voxel centres of the scan grid in pelvis-local coordinates (rotation about S only, so X and Y depend on
    the row and column, Z on the slice)."""

    def __init__(self, patient: PatientParams, scan: ScanParams):
        m, ps, n = scan.matrix, scan.pixel_spacing_mm, scan.n_slices
        self.m, self.n, self.ps, self.scale = m, n, ps, patient.scale
        o = scan.origin_lps
        self.x0, self.y0 = o[0], o[1]
        self.t = np.asarray(scan.table_offset_mm, float)
        self.R = scan.rotation_matrix[:2, :2]
        xs = self.x0 + np.arange(m) * ps - self.t[0]
        ys = self.y0 + np.arange(m) * ps - self.t[1]
        c, s = self.R[0, 0], self.R[1, 0]
        # local = R^T (p - t) / scale
        self.X = ((c * xs[None, :] + s * ys[:, None]) / self.scale).astype(np.float32)
        self.Y = ((-s * xs[None, :] + c * ys[:, None]) / self.scale).astype(np.float32)
        self.zphys = scan.z_range_mm[0] + np.arange(n) * scan.slice_spacing_mm
        self.Z = (self.zphys / self.scale).astype(np.float32)
        self.ss = scan.slice_spacing_mm
        self.z0 = scan.z_range_mm[0]
        self._coords: dict[tuple, tuple] = {}

    def box(self, bb: BBox, d0: int, d1: int) -> tuple[slice, slice, slice] | None:
        xmin, xmax, ymin, ymax, zmin, zmax = bb
        corners = np.array([[xmin, ymin], [xmin, ymax], [xmax, ymin], [xmax, ymax]]) * self.scale
        lps = corners @ self.R.T + self.t[:2]
        w = (lps[:, 0] - self.x0) / self.ps
        h = (lps[:, 1] - self.y0) / self.ps
        w0, w1 = max(int(math.floor(w.min())) - 1, 0), min(int(math.ceil(w.max())) + 2, self.m)
        h0, h1 = max(int(math.floor(h.min())) - 1, 0), min(int(math.ceil(h.max())) + 2, self.m)
        k0 = (zmin * self.scale - self.z0) / self.ss
        k1 = (zmax * self.scale - self.z0) / self.ss
        a, b = max(int(math.floor(k0)) - 1, d0), min(int(math.ceil(k1)) + 2, d1)
        if w0 >= w1 or h0 >= h1 or a >= b:
            return None
        return slice(a, b), slice(h0, h1), slice(w0, w1)

    def coords(self, box):
        """Local X, Y, Z (broadcastable) of a box; the same array objects for the same box (shared transforms)."""
        key = tuple((s.start, s.stop) for s in box)
        hit = self._coords.get(key)
        if hit is None:
            ds, hs, ws = box
            hit = self._coords[key] = (self.X[hs, ws][None], self.Y[hs, ws][None], self.Z[ds][:, None, None])
        return hit


def _inter(outer, inner):
    """Slices of ``inner`` (absolute) relative to ``outer`` and the clipped absolute box, or None."""
    rel, ab = [], []
    for o, i in zip(outer, inner):
        a, b = max(o.start, i.start), min(o.stop, i.stop)
        if a >= b:
            return None, None
        rel.append(slice(a - o.start, b - o.start))
        ab.append(slice(a, b))
    return tuple(rel), tuple(ab)


def _eval_obj(grid: _Grid, obj: Obj, region) -> np.ndarray:
    shape = tuple(s.stop - s.start for s in region)
    d = np.full(shape, 1e4, np.float32)
    for mode, prim in obj.items:
        if mode == "i":
            d = np.maximum(d, prim.sdf(*grid.coords(region)))
            continue
        sub = grid.box(prim.bbox, region[0].start, region[0].stop)
        if sub is None:
            continue
        rel, ab = _inter(region, sub)
        if rel is None:
            continue
        v = prim.sdf(*grid.coords(ab))
        v = np.broadcast_to(v, d[rel].shape)
        d[rel] = np.minimum(d[rel], v) if mode == "u" else np.maximum(d[rel], -v)
    return d


def _as_field(val, grid: _Grid, region) -> np.ndarray | float:
    return val(*grid.coords(region)) if callable(val) else val


def _paint(op: Op, p: PatientParams, grid: _Grid, hu: np.ndarray, lab: np.ndarray, d0: int, d1: int) -> None:
    region = grid.box(op.obj.bbox, d0, d1)
    if region is None:
        return
    d = _eval_obj(grid, op.obj, region) * grid.scale      # physical mm
    if not np.any(d < 0.5 * grid.ps):
        return
    ps = grid.ps
    h = hu[region]
    if op.kind in ("fill", "metal"):
        a = np.clip(0.5 - d / ps, 0.0, 1.0)
        h += a * (_as_field(op.hu, grid, region) - h)
    elif op.kind == "bone":
        out = np.clip(0.5 + d / ps, 0.0, 1.0)
        canc_frac = np.clip(0.5 - (d + op.cortex_mm) / ps, 0.0, 1.0)
        cort_frac = 1.0 - out - canc_frac
        inner = canc_frac > 0
        canc = np.zeros_like(h)
        if inner.any():
            val = _as_field(op.canc, grid, region)
            canc = np.broadcast_to(val, h.shape) if not np.isscalar(val) else np.full_like(h, val)
        h[...] = h * out + canc * canc_frac + op.hu * cort_frac
    elif op.kind == "bowel":
        lumen_frac, gas, stool = op.extra
        a = np.clip(0.5 - d / ps, 0.0, 1.0)
        h += a * (op.hu - h)            # wall
        wall = (1.0 - lumen_frac)
        dl = d + wall * 15.0 * grid.scale
        a2 = np.clip(0.5 - dl / ps, 0.0, 1.0)
        X, Y, Z = grid.coords(region)
        content = np.full(np.broadcast_shapes(X.shape, Z.shape), 15.0, np.float32)
        if stool > 0:   # faeces: mottled soft tissue with gas bubbles
            from training.phantom.appearance import texture
            t = texture(int(p.body.organ_seed), 1.5, X, Y, Z, stretch=2.0)
            content = content + 25.0 * t
            bubbles = np.clip((t - (1.2 - 0.6 * stool)) * 3.0, 0.0, 1.0)
            content = content + bubbles * (-900.0 - content)
        if gas > 0:     # gas in the anterior part of the object's box (patient supine)
            y0, y1 = op.obj.bbox[2], op.obj.bbox[3]
            level = y0 + gas * (y1 - y0)
            gfrac = np.clip((level - Y) * grid.scale / ps + 0.5, 0.0, 1.0)
            content = content + gfrac * (-950.0 - content)
        h += a2 * (content - h)
    elif op.kind == "tumour":
        t = p.tumour
        assert t is not None
        a = np.clip(0.5 - d / margin_width_mm(t, ps), 0.0, 1.0)
        a = residual_alpha(t, a, h, *grid.coords(region))     # v1: a itself
        V = tumour_hu(t, *grid.coords(region), d, ps, grid.scale)
        h += a * (V - h)
    hu[region] = h
    if op.label:
        m = d < 0
        lab[region][m] = op.label


def _table(grid: _Grid, patient: PatientParams, scan: ScanParams, hu: np.ndarray) -> None:
    """The CT table (fixed to the scanner in x, moves with the patient in y)."""
    m = grid.m
    xs = grid.x0 + np.arange(m) * grid.ps - grid.t[0]
    ys = grid.y0 + np.arange(m) * grid.ps
    b = patient.body
    back = sum(trunk_ellipse(b)) + b.fat_mm     # the skin of the back lies on the table
    top = grid.t[1] + back * patient.scale + 6.0
    if scan.table_shape == "curved":
        top = top - 0.0006 * xs ** 2
        thick, dens, half = 10.0, 120.0, 230.0
    elif scan.table_shape == "flat":
        top = top + 0.0 * xs
        thick, dens, half = 6.0, 250.0, 240.0
    else:   # thick pad on a carbon plate
        top = top - 0.0003 * xs ** 2
        thick, dens, half = 45.0, -750.0, 250.0
    dy = ys[:, None] - top[None, :]
    table = ((dy > 0) & (dy < thick) & (np.abs(xs)[None, :] < half)).astype(np.float32)
    hu += table[None] * (dens - hu)
    if scan.table_shape == "thick":
        plate = ((dy >= thick) & (dy < thick + 5) & (np.abs(xs)[None, :] < half)).astype(np.float32)
        hu += plate[None] * (300.0 - hu)


def render(patient: PatientParams, scan: ScanParams) -> tuple[Volume, Volume]:
    """Render the CT (HU, int16) and the label map (uint8), both D-H-W on the same LPS grid.

    The grid is the one the DICOM series is written on: ``scan.affine`` for head-first patients; for feet-first
    (``scan.patient_position == "FFS"``) the columns run to the patient's right (image orientation
    (-1, 0, 0, 0, 1, 0)), as feet-first series are displayed. Memory stays below ~3 GB at 512x512x350.
    """
    if patient.sex not in ("M", "F"):
        raise ValueError(f"sex must be 'M' or 'F', got {patient.sex!r}")
    if not (0.5 < patient.scale < 2.0):
        raise ValueError(f"scale {patient.scale} out of range")
    if scan.matrix < 8 or scan.n_slices < 2 or scan.pixel_spacing_mm <= 0 or scan.slice_spacing_mm <= 0:
        raise ValueError("invalid scan grid")
    grid = _Grid(patient, scan)
    n, m = grid.n, grid.m
    hu = np.full((n, m, m), -1000.0, np.float32)
    lab = np.zeros((n, m, m), np.uint8)
    _table(grid, patient, scan, hu)
    ops = scene(patient, scan.contrast)
    slab = max(1, int(3_000_000 // (m * m)))
    for d0 in range(0, n, slab):
        d1 = min(n, d0 + slab)
        grid._coords.clear()
        for op in ops:
            _paint(op, patient, grid, hu, lab, d0, d1)
    out = acquire(hu, scan, has_metal=any(op.kind == "metal" for op in ops))
    del hu
    np.clip(out, -1024, 3071, out=out)
    ct = np.rint(out).astype(np.int16)
    aff = scan.affine
    if scan.patient_position == "FFS":
        ct, lab = ct[:, :, ::-1].copy(), lab[:, :, ::-1].copy()
        origin = aff[:3, 3] + aff[:3, 2] * (m - 1)
        aff = affine_from_dicom(origin, np.array([-1.0, 0, 0]), np.array([0, 1.0, 0]), np.array([0, 0, 1.0]),
                                (scan.pixel_spacing_mm, scan.pixel_spacing_mm), scan.slice_spacing_mm)
    meta = {"case_id": patient.case_id}
    return Volume(ct, aff, dict(meta, kind="ct")), Volume(lab, aff.copy(), dict(meta, kind="labels"))
