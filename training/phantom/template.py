"""The template bony pelvis: real surface meshes voxelised into signed-distance fields.

Source: ``anatomy_data/`` (a real adult male pelvis from MyoHub/myo_sim, Apache 2.0; see its README for the
attribution). The meshes are coarse (about 25 mm edges on the hip bones), so each structure is voxelised at
1 mm (ray parity along the three axes, majority vote, which tolerates the one open edge of the hip meshes),
turned into a signed distance (negative inside, mm) and smoothed with a 2 mm Gaussian, which rounds the facets.

**Pelvis-local frame** (every coordinate of the phantom package is in it unless it says LPS): millimetres,
axes L (x, towards the patient's left), P (y, posterior), S (z, towards the head), origin at the centre of the
bounding box of the two hip bones. The meshes' OpenSim frame (+x anterior, +y superior, +z right, metres) maps
to it by ``(L, P, S) = 1000 * (-z, -x, +y) - origin``.

The fields are built once per process (about 10 s) and cached on disk under ``$SACRAL_PHANTOM_CACHE`` (default
``~/.cache/sacral-phantom``), keyed by the sha256 of the meshes and :data:`TEMPLATE_VERSION`.
"""
from __future__ import annotations

import functools
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

MESH_DIR = Path(__file__).resolve().parent / "anatomy_data"
TEMPLATE_VERSION = "1"
STEP_MM = 1.0
MARGIN_MM = 14.0
FEMUR_LENGTH_MM = 230.0   # kept below the hip joint centre (the shaft further down is rendered analytically)

_STL_DTYPE = np.dtype([("normal", "<f4", (3,)), ("v", "<f4", (3, 3)), ("attr", "<u2")])
#: mesh file of each structure
MESHES: dict[str, str] = {
    "hip_left": "l_pelvis.stl", "hip_right": "r_pelvis.stl", "sacrum": "sacrum.stl", "L5": "lumbar5.stl",
    "femur_left": "l_femur.stl", "femur_right": "r_femur.stl",
}
#: hip joint centres in the OpenSim frame (m), from myolegs_chain.xml (+z is right)
_HIP_CENTRE_M = {"femur_left": (-0.056276, -0.07849, -0.07726), "femur_right": (-0.056276, -0.07849, 0.07726)}
_L5_PLACEMENT = (-0.3, (-0.108, 0.061, 0.0))   # rotation about +z (rad), translation (m)


def read_stl(path: Path) -> np.ndarray:
    """Triangles of a binary STL file: (n, 3, 3) float64, in the file's units."""
    raw = Path(path).read_bytes()
    if len(raw) < 84:
        raise ValueError(f"{path}: not a binary STL file")
    n = int.from_bytes(raw[80:84], "little")
    if len(raw) < 84 + 50 * n:
        raise ValueError(f"{path}: truncated STL ({n} triangles announced)")
    return np.frombuffer(raw[84:84 + 50 * n], dtype=_STL_DTYPE)["v"].astype(np.float64)


def _placed(name: str, tris_m: np.ndarray) -> np.ndarray:
    """Mesh vertices placed in the OpenSim pelvis frame (m)."""
    if name in _HIP_CENTRE_M:
        return tris_m + np.asarray(_HIP_CENTRE_M[name])
    if name == "L5":
        a, t = _L5_PLACEMENT
        c, s = np.cos(a), np.sin(a)
        rot = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
        return tris_m @ rot.T + np.asarray(t)
    return tris_m


def opensim_to_lps_axes(v_m: np.ndarray) -> np.ndarray:
    """OpenSim (x anterior, y superior, z right; m) -> (L, P, S) mm, not yet re-centred."""
    v = np.asarray(v_m, float)
    return np.stack([-v[..., 2], -v[..., 0], v[..., 1]], axis=-1) * 1000.0


def _parity(tris: np.ndarray, axes: list[np.ndarray], axis: int) -> np.ndarray:
    """Inside test by ray parity along ``axis`` for every voxel centre of the grid ``axes``."""
    a0, a1 = [i for i in range(3) if i != axis]
    g0, g1, ga = axes[a0], axes[a1], axes[axis]
    crossings = np.zeros((len(g0), len(g1), len(ga) + 1), np.int16)
    for tri in tris:
        (x0, y0), (x1, y1), (x2, y2) = tri[:, [a0, a1]]
        det = (y1 - y2) * (x0 - x2) + (x2 - x1) * (y0 - y2)
        if abs(det) < 1e-12:
            continue
        i0, i1 = np.searchsorted(g0, min(x0, x1, x2)), np.searchsorted(g0, max(x0, x1, x2), side="right")
        j0, j1 = np.searchsorted(g1, min(y0, y1, y2)), np.searchsorted(g1, max(y0, y1, y2), side="right")
        if i0 >= i1 or j0 >= j1:
            continue
        px, py = np.meshgrid(g0[i0:i1], g1[j0:j1], indexing="ij")
        l0 = ((y1 - y2) * (px - x2) + (x2 - x1) * (py - y2)) / det
        l1 = ((y2 - y0) * (px - x2) + (x0 - x2) * (py - y2)) / det
        l2 = 1.0 - l0 - l1
        hit = (l0 >= 0) & (l1 >= 0) & (l2 > 0)
        if not hit.any():
            continue
        depth = l0 * tri[0, axis] + l1 * tri[1, axis] + l2 * tri[2, axis]
        ii, jj = np.nonzero(hit)
        kk = np.searchsorted(ga, depth[ii, jj])
        np.add.at(crossings, (ii + i0, jj + j0, kk), 1)   # a crossing toggles every voxel beyond it
    inside = (np.cumsum(crossings, axis=2)[..., :-1] % 2) == 1
    order = [a0, a1, axis]
    return np.transpose(inside, np.argsort(order))


def voxelize(tris_mm: np.ndarray, lo: np.ndarray, shape: tuple[int, int, int], step: float = STEP_MM) -> np.ndarray:
    """Boolean occupancy (x, y, z index order) of a closed triangle mesh on the grid ``lo + step * index``."""
    axes = [lo[i] + step * np.arange(shape[i]) for i in range(3)]
    votes = sum(_parity(tris_mm, axes, ax).astype(np.int8) for ax in range(3))
    return votes >= 2


@dataclass(frozen=True)
class GridField:
    """A scalar field sampled on a regular grid (x, y, z index order, pelvis-local mm)."""

    values: np.ndarray          # float32 (nx, ny, nz)
    origin: np.ndarray          # local mm of index (0, 0, 0)
    step: float                 # mm

    @property
    def bbox(self) -> tuple[float, float, float, float, float, float]:
        hi = self.origin + self.step * (np.asarray(self.values.shape) - 1)
        return (float(self.origin[0]), float(hi[0]), float(self.origin[1]), float(hi[1]), float(self.origin[2]),
                float(hi[2]))

    def sample(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Trilinear value at local mm points (broadcast arrays); the border value outside the grid."""
        x, y, z = np.broadcast_arrays(x, y, z)
        coords = np.stack([(x - self.origin[0]) / self.step, (y - self.origin[1]) / self.step,
                           (z - self.origin[2]) / self.step]).astype(np.float32)
        return ndimage.map_coordinates(self.values, coords, order=1, mode="nearest").astype(np.float32)


@dataclass(frozen=True)
class SacralTable:
    """Per-millimetre description of the template sacrum along S (local mm), from its voxel mask.

    ``z`` runs from the top of S1 (``z[0]``) to the coccyx tip (``z[-1]``); ``xc``, ``yc`` are the centre of the
    sacrum's cross-section, ``hw``, ``hd`` its half width (L) and half depth (P) at each ``z``.
    """

    z: np.ndarray
    xc: np.ndarray
    yc: np.ndarray
    hw: np.ndarray
    hd: np.ndarray

    def at(self, level: float) -> tuple[float, float, float, float, float]:
        """(xc, yc, z, hw, hd) at ``level`` (0 top of S1 .. 1 coccyx tip)."""
        t = float(np.clip(level, 0.0, 1.0)) * (len(self.z) - 1)
        i = int(min(t, len(self.z) - 2))
        f = t - i
        pick = [float((1 - f) * a[i] + f * a[i + 1]) for a in (self.xc, self.yc, self.z, self.hw, self.hd)]
        return pick[0], pick[1], pick[2], pick[3], pick[4]


@dataclass(frozen=True)
class Template:
    """The template pelvis: one signed-distance field per structure and landmarks (pelvis-local mm)."""

    sdf: dict[str, GridField]
    sacrum: SacralTable
    hip_centres: dict[str, np.ndarray]     # "left"/"right": acetabulum (femoral head) centre
    femoral_head_mm: float                 # radius of the template femoral head
    hip_z_extent: tuple[float, float]      # lowest and highest hip-bone point along S


def _mesh_hash() -> str:
    h = hashlib.sha256(TEMPLATE_VERSION.encode())
    for name in sorted(MESHES.values()):
        h.update((MESH_DIR / name).read_bytes())
    return h.hexdigest()[:16]


def _build() -> dict[str, np.ndarray]:
    tris = {k: opensim_to_lps_axes(_placed(k, read_stl(MESH_DIR / f))) for k, f in MESHES.items()}
    hips = np.concatenate([tris["hip_left"].reshape(-1, 3), tris["hip_right"].reshape(-1, 3)])
    centre = (hips.min(0) + hips.max(0)) / 2.0
    out: dict[str, np.ndarray] = {"centre": centre}
    for name, t in tris.items():
        t = t - centre
        if name.startswith("femur"):
            joint = opensim_to_lps_axes(np.asarray(_HIP_CENTRE_M[name])) - centre
            keep = t[:, :, 2].max(axis=1) > joint[2] - FEMUR_LENGTH_MM
            t = t[keep]
            out[f"{name}_joint"] = joint
        v = t.reshape(-1, 3)
        lo = np.floor(v.min(0) - MARGIN_MM)
        hi = np.ceil(v.max(0) + MARGIN_MM)
        if name.startswith("femur"):
            lo[2] = max(lo[2], float(out[f"{name}_joint"][2]) - FEMUR_LENGTH_MM + 20.0)
        shape = tuple(int(s) for s in np.round((hi - lo) / STEP_MM) + 1)
        inside = voxelize(t, lo, shape)
        inside = ndimage.binary_closing(inside, iterations=1, border_value=0) | inside
        dist = (ndimage.distance_transform_edt(~inside) - ndimage.distance_transform_edt(inside)) * STEP_MM
        sdf = ndimage.gaussian_filter(dist.astype(np.float32), 2.0 / STEP_MM)
        if name.startswith("femur"):  # the cut shaft must stay open at its lower end, not rounded
            sdf[:, :, 0] = np.minimum(sdf[:, :, 0], sdf[:, :, 1])
        out[f"{name}_sdf"] = np.clip(sdf, -40.0, 40.0).astype(np.float32)
        out[f"{name}_origin"] = lo
    return out


@functools.lru_cache(maxsize=1)
def load_template() -> Template:
    """The template (built once per process; cached on disk between processes)."""
    cache_dir = Path(os.environ.get("SACRAL_PHANTOM_CACHE", Path.home() / ".cache" / "sacral-phantom"))
    path = cache_dir / f"template-{_mesh_hash()}.npz"
    data: dict[str, np.ndarray] | None = None
    if path.exists():
        try:
            with np.load(path) as z:
                data = {k: z[k] for k in z.files}
        except (OSError, ValueError):
            data = None
    if data is None:
        data = _build()
        try:
            cache_dir.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
            np.savez(tmp, **data)
            os.replace(tmp, path)
        except OSError:
            pass
    sdf = {k: GridField(data[f"{k}_sdf"], np.asarray(data[f"{k}_origin"], float), STEP_MM) for k in MESHES}
    sac = sdf["sacrum"]
    inside = sac.values < 0
    zs = sac.origin[2] + STEP_MM * np.arange(inside.shape[2])
    rows = []
    area = inside.sum(axis=(0, 1))
    for k in range(inside.shape[2] - 1, -1, -1):  # from the top (S1 endplate) down
        ij = np.argwhere(inside[:, :, k])
        if len(ij) < max(20, 0.2 * area.max()) and not rows:
            continue
        if len(ij) < 5:
            continue
        x = sac.origin[0] + STEP_MM * ij[:, 0]
        y = sac.origin[1] + STEP_MM * ij[:, 1]
        rows.append((zs[k], x.mean(), y.mean(), (x.max() - x.min()) / 2 + 0.5, (y.max() - y.min()) / 2 + 0.5))
    arr = np.asarray(rows)
    table = SacralTable(z=arr[:, 0], xc=arr[:, 1], yc=arr[:, 2], hw=arr[:, 3], hd=arr[:, 4])
    hips_z = []
    for k in ("hip_left", "hip_right"):
        f = sdf[k]
        kk = np.nonzero((f.values < 0).any(axis=(0, 1)))[0]
        hips_z += [f.origin[2] + STEP_MM * kk.min(), f.origin[2] + STEP_MM * kk.max()]
    centres = {"left": np.asarray(data["femur_left_joint"], float), "right": np.asarray(data["femur_right_joint"], float)}
    # femoral head radius: distance from the joint centre to the femur surface, inward from the centre
    fl = sdf["femur_left"]
    head = -float(fl.sample(*[np.asarray([c]) for c in centres["left"]])[0])
    return Template(sdf=sdf, sacrum=table, hip_centres=centres, femoral_head_mm=head,
                    hip_z_extent=(float(min(hips_z)), float(max(hips_z))))
