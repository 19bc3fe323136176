"""The synthetic body: the template bony pelvis deformed per patient, soft tissue, organs, distractors, metal.

:class:`BoneTransform` maps between the template frame and the patient's pelvis-local frame (both mm, L/P/S);
:class:`SacrumGeometry` is the patient's own sacrum for tumour placement; :func:`scene` lists what the renderer
paints, in order (later items paint over earlier ones; the tumour comes last).
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
from scipy import ndimage

from training.phantom import appearance
from training.phantom.params import LABELS, Body, PatientParams, PelvisShape
from training.phantom.shapes import BBox, Capsule, Dilate, Ellipsoid, Func, Obj, Prim, ell2_sdf
from training.phantom.template import GridField, Template, load_template
from training.phantom.tumour import displace, satellites, tumour_prim

_FIELD_STEP = 15.0                                   # mm between nodes of the displacement field
_FIELD_LO = np.array([-200.0, -150.0, -320.0])       # template mm covered by the field
_FIELD_SHAPE = (28, 22, 52)


def _rot(axis: int, deg: float) -> np.ndarray:
    t = math.radians(deg)
    c, s = math.cos(t), math.sin(t)
    i, j = [(1, 2), (2, 0), (0, 1)][axis]
    r = np.eye(3)
    r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
    return r


class BoneTransform:
    """Template mm <-> this patient's pelvis-local mm (see :class:`PelvisShape` for the model)."""

    def __init__(self, shape: PelvisShape) -> None:
        self.s = shape
        self.R = _rot(2, shape.roll_deg) @ _rot(1, shape.yaw_deg) @ _rot(0, shape.tilt_deg)
        self.Rt = self.R.T.astype(np.float32)
        rng = np.random.default_rng(shape.deform_seed)
        v = ndimage.gaussian_filter(rng.standard_normal((3, *_FIELD_SHAPE)), sigma=(0, 2.5, 2.5, 2.5))
        rms = float(np.sqrt((v ** 2).sum(axis=0).mean())) + 1e-9
        self.v = (v * (shape.deform_mm / rms)).astype(np.float32)
        self.mean_scale = float((shape.width * shape.depth * shape.height) ** (1.0 / 3.0))
        self._last: tuple | None = None   # (X, Y, Z, result) of the last call: CSG items share their region

    def _disp(self, bx, by, bz) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        c = np.stack([(bx - _FIELD_LO[0]) / _FIELD_STEP, (by - _FIELD_LO[1]) / _FIELD_STEP,
                      (bz - _FIELD_LO[2]) / _FIELD_STEP]).astype(np.float32)
        return tuple(ndimage.map_coordinates(self.v[i], c, order=1, mode="nearest") for i in range(3))  # type: ignore

    def _xscale(self, ax, bz):
        s = self.s
        low = np.clip((-45.0 - bz) / 45.0, 0.0, 1.0)     # below the acetabula
        return s.width * (1.0 + s.subpubic * low) * (1.0 + s.asymmetry * np.tanh(ax / 15.0))

    def to_template(self, X, Y, Z) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Local mm points (broadcastable arrays) -> template mm points (arrays of the broadcast shape)."""
        last = self._last
        if last is not None and last[0] is X and last[1] is Y and last[2] is Z:
            return last[3]
        X0, Y0, Z0 = X, Y, Z
        X, Y, Z = np.broadcast_arrays(X, Y, Z)
        r = self.Rt
        ax = r[0, 0] * X + r[0, 1] * Y + r[0, 2] * Z
        ay = r[1, 0] * X + r[1, 1] * Y + r[1, 2] * Z
        az = r[2, 0] * X + r[2, 1] * Y + r[2, 2] * Z
        bz = az / self.s.height
        bx = ax / self._xscale(ax, bz)
        by = ay / self.s.depth
        if self.s.deform_mm > 0:
            dx, dy, dz = self._disp(bx, by, bz)
            bx, by, bz = bx - dx, by - dy, bz - dz
        self._last = (X0, Y0, Z0, (bx, by, bz))
        return bx, by, bz

    def to_local(self, q) -> np.ndarray:
        """Template mm points (N, 3) -> local mm points (N, 3) (inverse of :meth:`to_template`)."""
        q = np.atleast_2d(np.asarray(q, float))
        b = q.copy()
        if self.s.deform_mm > 0:
            for _ in range(4):
                d = np.stack(self._disp(b[:, 0], b[:, 1], b[:, 2]), axis=1)
                b = q + d
        a = b.copy()
        a[:, 2] = b[:, 2] * self.s.height
        ax = b[:, 0] * self.s.width
        for _ in range(3):
            ax = b[:, 0] * self._xscale(ax, b[:, 2])
        a[:, 0] = ax
        a[:, 1] = b[:, 1] * self.s.depth
        return a @ self.R.T

    def local_bbox(self, bbox: BBox, margin: float) -> BBox:
        """Local box containing the template box ``bbox`` after the transform (plus ``margin`` mm)."""
        xs, ys, zs = bbox[0:2], bbox[2:4], bbox[4:6]
        corners = np.array([[x, y, z] for x in xs for y in ys for z in zs])
        loc = self.to_local(corners)
        m = margin + 2.5 * self.s.deform_mm + 4.0
        lo, hi = loc.min(0) - m, loc.max(0) + m
        return (lo[0], hi[0], lo[1], hi[1], lo[2], hi[2])


class TemplateBone(Prim):
    """A template structure seen through a patient's :class:`BoneTransform` (optionally shifted and scaled
    inside the template frame first: ``q_struct = (q - offset) / factor``, for the lumbar copies of L5)."""

    def __init__(self, field: GridField, tr: BoneTransform, offset=(0.0, 0.0, 0.0), factor: float = 1.0):
        self.f, self.tr = field, tr
        self.offset, self.factor = np.asarray(offset, np.float32), float(factor)
        b = field.bbox
        o, k = self.offset, self.factor
        tb = (b[0] * k + o[0], b[1] * k + o[0], b[2] * k + o[1], b[3] * k + o[1], b[4] * k + o[2], b[5] * k + o[2])
        self.bbox = tr.local_bbox(tb, 2.0)

    def sdf(self, X, Y, Z):
        qx, qy, qz = self.tr.to_template(X, Y, Z)
        if self.factor != 1.0 or self.offset.any():
            qx, qy, qz = ((qx - self.offset[0]) / self.factor, (qy - self.offset[1]) / self.factor,
                          (qz - self.offset[2]) / self.factor)
        return self.f.sample(qx, qy, qz) * (self.tr.mean_scale * self.factor)


class SacrumGeometry:
    """The patient's sacrum for tumour placement (satisfies :class:`training.phantom.tumour.SacrumLike`)."""

    FORAMINA_LEVELS = (0.2, 0.37, 0.53, 0.67)

    def __init__(self, template: Template, tr: BoneTransform) -> None:
        self.t, self.tr = template.sacrum, tr

    def template_point(self, level: float, lateral: float, ap: float) -> np.ndarray:
        xc, yc, z, hw, hd = self.t.at(level)
        return np.array([xc + lateral * hw, yc + ap * hd, z])

    def point(self, level: float, lateral: float, ap: float) -> tuple[float, float, float]:
        p = self.tr.to_local(self.template_point(level, lateral, ap)[None])[0]
        return (float(p[0]), float(p[1]), float(p[2]))

    def foramen_lateral(self, i: int) -> float:
        return 0.62 - 0.04 * i


@dataclass
class Op:
    """One paint step: ``kind`` fill | bone | bowel | tumour | metal, its shape, HU and label."""

    kind: str
    obj: Obj
    hu: float | Callable = 0.0    # fill value / cortical HU
    label: int = 0
    canc: float | Callable = 250.0
    cortex_mm: float = 1.5
    extra: Any = None


@functools.lru_cache(maxsize=1)
def _femur_shaft(side: str) -> tuple[np.ndarray, float]:
    """(centre (x, y, z), radius) of the template femur's cut end (template mm)."""
    f = load_template().sdf[f"femur_{side}"]
    k = 2
    ij = np.argwhere(f.values[:, :, k] < 0)
    c = f.origin[:2] + f.step * ij.mean(0)
    r = math.sqrt(len(ij) * f.step ** 2 / math.pi)
    return np.array([c[0], c[1], f.origin[2] + k * f.step]), r


def trunk_ellipse(body: Body) -> tuple[float, float]:
    """(centre along P, half depth) of the trunk's muscle envelope in local mm; its back lies at their sum."""
    return 25.0, 118.0 * (0.9 + 0.2 * body.visceral_fat)


def scene(p: PatientParams, contrast: bool) -> list[Op]:
    """Paint operations for patient ``p``, in painting order (pelvis-local mm)."""
    tpl = load_template()
    tr = BoneTransform(p.shape)
    body, bone, imp = p.body, p.bone, p.implants
    bw, fat = body.body_width, body.fat_mm
    pw = p.shape.width
    ops: list[Op] = []
    E = Ellipsoid
    C = Capsule
    L = lambda q: tr.to_local(np.asarray(q, float)[None])[0]  # noqa: E731 - template point -> local
    orng = np.random.default_rng(body.organ_seed)

    # --- soft-tissue envelope -----------------------------------------------------------------------------------
    ycb, ED = trunk_ellipse(body)

    def ew(Z):  # lateral half-width of the muscle/skeleton envelope
        return bw * pw * (158.0 - 12.0 * np.clip((Z - 20.0) / 90.0, 0.0, 1.0) + 25.0 * body.visceral_fat)

    def trunk(extra: float):
        def f(X, Y, Z):
            d2 = ell2_sdf(X, Y - ycb, ew(Z) + extra, ED + extra)
            return np.maximum(d2, -115.0 - Z)
        half = 185 * bw * pw + extra
        return Func(f, (-half, half, ycb - ED - extra, ycb + ED + extra, -115.0, 480.0))

    def thighs(extra: float):
        return [E((s * 98.0 * pw, 10.0, -270.0), (78.0 * bw + extra, 88.0 + extra, 190.0)) for s in (1, -1)]

    ops.append(Op("fill", Obj(("u", trunk(fat)), *[("u", t) for t in thighs(fat)]), 40.0))         # skin
    ops.append(Op("fill", Obj(("u", trunk(fat - 2.5)), *[("u", t) for t in thighs(fat - 2.5)]), body.fat_hu))
    ops.append(Op("fill", Obj(("u", Func(lambda X, Y, Z: np.maximum(np.maximum(
        np.abs(ell2_sdf(X, Y - ycb, ew(Z) - 6, ED - 6)) - 6.0, -40.0 - Z), Y - 60.0),
        (-185 * bw * pw, 185 * bw * pw, ycb - ED, ycb + ED, -40.0, 480.0)))), body.muscle_hu))   # abdominal wall
    # intra-abdominal fat
    ops.append(Op("fill", Obj(("u", Func(lambda X, Y, Z: np.maximum(ell2_sdf(X, Y - ycb, ew(Z) - 12, ED - 12),
                                                                      -40.0 - Z),
                                         (-180 * bw * pw, 180 * bw * pw, ycb - ED, ycb + ED, -40.0, 480.0)))),
                  body.fat_hu + 10.0))
    # --- arms beside the body (arms down) ---------------------------------------------------------------------------
    if body.arms == "down":
        for s in (1, -1):
            x = s * (float(ew(60.0)) + fat + 45.0)
            ops.append(Op("fill", Obj(("u", C((x, 10, 330), (x * 1.02, -5, -170), 38.0))), body.muscle_hu))
            ops.append(Op("bone", Obj(("u", C((x, 12, 330), (x, 12, 150), 11.0)),
                                      ("u", C((x - s * 8, 5, 130), (x - s * 4, -10, -110), 7.0)),
                                      ("u", C((x + s * 8, 10, 130), (x + s * 10, -5, -110), 6.5))),
                          bone.cortex_hu, LABELS["other_bone"], 120.0, 2.0))
    # --- muscles ---------------------------------------------------------------------------------------------------
    mh = body.muscle_hu
    for s in (1, -1):
        ops.append(Op("fill", Obj(("u", C((s * 112 * pw, 5, -80), (s * 100 * pw, 10, -440), 62.0))), mh))
        ops.append(Op("fill", Obj(("u", E((s * 92 * pw, 95, -40), (58 * pw, 40, 85)))), mh - 2))     # glut. max
        ops.append(Op("fill", Obj(("u", E((s * 128 * pw, 25, 40), (23 * pw, 48, 48)))), mh + 2))     # glut. med
        ops.append(Op("fill", Obj(("u", E((s * 82 * pw, 5, 40), (22 * pw, 38, 45)))), mh))           # iliacus
        ops.append(Op("fill", Obj(("u", E((s * 28, 100, 120), (24, 22, 110)))), mh + 2))             # paraspinal
        ops.append(Op("fill", Obj(("u", E((s * 58 * pw, -10, -70), (10, 33, 24)))), mh))             # obt. int.
        ops.append(Op("fill", Obj(("u", C((s * 40, 48, 300), (s * 50 * pw, 30, 90), 18.0)),           # psoas
                                  ("u", C((s * 50 * pw, 30, 90), (s * 70 * pw, -18, 0), 19.0)),
                                  ("u", C((s * 70 * pw, -18, 0), (s * 76 * pw, -42, -60), 14.0))), mh + 2))
    # --- abdominal organs (abdomen coverage) -------------------------------------------------------------------------
    ops.append(Op("fill", Obj(("u", E((-65, -5, 300), (95, 85, 95)))), 80.0 if contrast else 58.0))   # liver
    ops.append(Op("fill", Obj(("u", E((85, 45, 320), (40, 50, 60)))), 120.0 if contrast else 46.0))  # spleen
    for s in (1, -1):
        ops.append(Op("fill", Obj(("u", E((s * 72, 45, 225 + 8 * s), (32, 26, 58)))), 40.0))        # perirenal
        ops.append(Op("fill", Obj(("u", E((s * 72, 45, 225 + 8 * s), (27, 21, 52)))), 150.0 if contrast else 32.0))
    # --- vessels -------------------------------------------------------------------------------------------------
    art, vein = (280.0, 180.0) if contrast else (45.0, 40.0)
    a_top, v_top = (0.0, 18.0, 480.0), (-15.0, 28.0, 480.0)
    a_bif, v_bif = (0.0, 18.0, 140.0), (-12.0, 28.0, 125.0)
    art_items = [("u", C(a_top, a_bif, 10.0))]
    vein_items = [("u", C(v_top, v_bif, 12.0))]
    a_paths = {}
    for s in (1, -1):
        a_pts = [a_bif, (s * 32 * pw, 14, 80), (s * 58 * pw, -25, -5), (s * 74 * pw, -50, -75),
                 (s * 92 * pw, -45, -300)]
        a_paths[s] = a_pts
        for a, b in zip(a_pts[:-1], a_pts[1:]):
            art_items.append(("u", C(a, b, 5.5)))
        v_pts = [v_bif, (s * 30 * pw, 25, 75), (s * 52 * pw, -18, -5), (s * 66 * pw, -47, -75),
                 (s * 82 * pw, -40, -300)]
        for a, b in zip(v_pts[:-1], v_pts[1:]):
            vein_items.append(("u", C(a, b, 7.0)))
    ops.append(Op("fill", Obj(*vein_items), vein))
    ops.append(Op("fill", Obj(*art_items), art))
    if body.vascular_calcification > 0:   # plaques along the aorta and iliac arteries
        n = int(round(4 + 30 * body.vascular_calcification))
        plaques = []
        for _ in range(n):
            s = 1 if orng.random() < 0.5 else -1
            if orng.random() < 0.3:
                a, b, r = np.array(a_top), np.array(a_bif), 10.0
            else:
                k = int(orng.integers(0, 3))
                a, b, r = np.array(a_paths[s][k]), np.array(a_paths[s][k + 1]), 5.5
            c = a + orng.random() * (b - a)
            u = orng.normal(size=3)
            u[2] = 0.0
            u /= np.linalg.norm(u) + 1e-9
            plaques.append(("u", E(tuple(c + u * r), (orng.uniform(1.2, 2.5),) * 2 + (orng.uniform(2, 6),))))
        ops.append(Op("fill", Obj(*plaques), float(orng.uniform(400, 900))))
    for x, y, z, r in body.lymph_nodes:
        ops.append(Op("fill", Obj(("u", E((x, y, z), (r, r * 0.8, r * 1.3)))), 38.0))
    # --- pelvic organs -------------------------------------------------------------------------------------------
    f = body.bladder_fill ** (1.0 / 3.0)
    bl_c, bl_r = (0.0, -42.0, -30.0 + 10 * (f - 1)), (40.0 * f, 30.0 * f, 28.0 * f)
    if p.has_tumour and p.tumour.WORLD != "v1":   # mass effect on the bladder (tumour world v2)
        bl_c = tuple(displace(p.tumour, [bl_c], 0.8 * max(bl_r))[0])
    ops.append(Op("fill", Obj(("u", E(bl_c, tuple(r + 3 for r in bl_r)))), 40.0))
    ops.append(Op("fill", Obj(("u", E(bl_c, bl_r))), 260.0 if contrast else 8.0))
    if p.sex == "M":
        ops.append(Op("fill", Obj(("u", E((0, -30, -78), (20, 16, 17)))), 42.0))                   # prostate
        ops.append(Op("fill", Obj(("u", E((-15, -12, -48), (12, 8, 8))), ("u", E((15, -12, -48), (12, 8, 8)))), 30.0))
    else:
        ops.append(Op("fill", Obj(("u", E((0, -5, -15), (26, 20, 34)))), 70.0 if contrast else 48.0))  # uterus
        for s in (1, -1):
            ops.append(Op("fill", Obj(("u", E((s * 45, 5, -20), (14, 10, 11)))), 30.0))             # ovaries
    rect = [((0, 45, -85), (0, 28, -30)), ((0, 28, -30), (-6, 18, 25))]
    if p.has_tumour and p.tumour.WORLD != "v1":   # mass effect on the rectum (tumour world v2)
        q = displace(p.tumour, [rect[0][0], rect[0][1], rect[1][1]], 15.0)
        rect = [(tuple(q[0]), tuple(q[1])), (tuple(q[1]), tuple(q[2]))]
    ops.append(Op("bowel", Obj(*[("u", C(a, b, 15.0)) for a, b in rect]), 40.0,
                  extra=(14.0 / 15.0, body.rectal_gas, body.rectal_stool)))
    for b in body.bowel:
        ops.append(Op("bowel", Obj(("u", C(b[0:3], b[3:6], b[6]))), 80.0 if contrast else 40.0,
                      extra=((b[6] - 2.5) / b[6], b[7], b[8])))
    for x, y, z, r, hu in body.phleboliths:
        ops.append(Op("fill", Obj(("u", E((x, y, z), (r, r, r)))), hu))

    # --- bones ---------------------------------------------------------------------------------------------------
    canc = lambda off=0.0: (lambda X, Y, Z: appearance.cancellous_hu(bone, X, Y, Z, off))  # noqa: E731
    cort = bone.cortex_hu
    # lumbar and lower thoracic vertebrae: L5's template stacked upwards, with discs; ribs from T10 up
    l5 = tpl.sdf["L5"]
    for k in range(1, 9):
        off = (0.0, -4.0 * math.sin(k * 0.5), 36.0 * k - 1.5 * max(0, k - 4))
        fac = 1.0 - 0.015 * k
        ops.append(Op("bone", Obj(("u", TemplateBone(l5, tr, off, fac))), cort * 0.9, LABELS["vertebra"],
                      canc(-10.0), max(0.8, bone.cortex_mm * 0.8)))
    for k in range(5, 9):
        zr = 108.0 + 36.0 * k - 6.0
        for s in (1, -1):
            pts = [L((s * 25, 60, zr)), L((s * 85, 62, zr - 8)), L((s * 140, 10, zr - 35)),
                   L((s * 125, -55, zr - 70)), L((s * 80, -90, zr - 95))]
            ops.append(Op("bone", Obj(*[("u", C(a, b, 5.5)) for a, b in zip(pts[:-1], pts[1:])]), cort * 0.85,
                          LABELS["other_bone"], canc(-40.0), 1.0))
    disc = p.shape.l5s1_disc_mm
    top = L((0.0, 44.0, 88.0 + disc / 2.0))
    ops.append(Op("fill", Obj(("u", E(tuple(top), (24.0, 17.0, max(disc / 2.0, 1.0))))), 85.0))   # L5/S1 disc
    sac_prim = TemplateBone(tpl.sdf["sacrum"], tr)
    sac_items: list[tuple[str, Prim]] = [("u", sac_prim)]
    geo = SacrumGeometry(tpl, tr)
    for i, lev in enumerate(SacrumGeometry.FORAMINA_LEVELS):
        xc, yc, z, hw, hd = tpl.sacrum.at(lev)
        for s in (1, -1):
            x = xc + s * geo.foramen_lateral(i) * hw
            sac_items.append(("s", C(L((x, yc - hd - 8.0, z)), L((x, yc + 0.4 * hd, z)), 5.0 - 0.6 * i)))
    canal = [L(np.array(tpl.sacrum.at(lev)[:3]) + np.array([0.0, 0.45 * tpl.sacrum.at(lev)[4], 0.0]))
             for lev in (0.0, 0.35, 0.7)]
    sac_items += [("s", C(canal[0], canal[1], 8.0)), ("s", C(canal[1], canal[2], 5.0))]
    ops.append(Op("bone", Obj(*sac_items), cort * 0.95, LABELS["sacrum"], canc(-15.0), max(0.6, bone.cortex_mm * 0.8)))
    l5_items: list[tuple[str, Prim]] = [("u", TemplateBone(l5, tr))]
    if p.shape.lumbosacral != "normal":   # Castellvi-type enlarged transverse process meeting the sacral ala
        sides = {"transitional_left": (1,), "transitional_right": (-1,), "transitional_both": (1, -1)}[p.shape.lumbosacral]
        for s in sides:
            l5_items.append(("u", C(L((s * 20.0, 52.0, 100.0)), L((s * 52.0, 45.0, 92.0)), 9.0)))
    ops.append(Op("bone", Obj(*l5_items), cort * 0.9, LABELS["L5"], canc(-10.0), max(0.8, bone.cortex_mm * 0.8)))

    fem_prims = {}
    for side, lab_h, lab_f in (("left", LABELS["hip_left"], LABELS["femur_left"]),
                               ("right", LABELS["hip_right"], LABELS["femur_right"])):
        s = 1.0 if side == "left" else -1.0
        fprim = TemplateBone(tpl.sdf[f"femur_{side}"], tr)
        head_c = L(tpl.hip_centres[side])
        head_r = p.shape.femoral_head_mm * tr.mean_scale
        fem_prims[side] = (fprim, head_c, head_r)
        hip_items: list[tuple[str, Prim]] = [("u", TemplateBone(tpl.sdf[f"hip_{side}"], tr))]
        for (x, y, z, r) in bone.osteophytes:
            if x * s > 0:
                hip_items.append(("u", E(tuple(L((x, y, z))), (r, r, r * 0.8))))
        hip_items += [("s", Dilate(sac_prim, bone.si_gap_mm)),
                      ("s", Ellipsoid(tuple(head_c), (head_r + bone.hip_gap_mm,) * 3)),
                      ("i", Func(_half_space(tr, s, bone.symphysis_gap_mm / 2.0), (-1e4, 1e4, -1e4, 1e4, -1e4, 1e4)))]
        metal_side = imp.hip_prosthesis in (side, "both")
        ops.append(Op("bone", Obj(*hip_items), cort, lab_h, canc(0.0), bone.cortex_mm))
        if not metal_side:
            shaft_c, shaft_r = _femur_shaft(side)
            shaft_top = L(shaft_c + np.array([0.0, 0.0, 12.0]))
            shaft_bot = L(shaft_c + np.array([0.0, 0.0, -400.0]))
            femur = Obj(("u", fprim), ("u", Ellipsoid(tuple(head_c), (head_r,) * 3)),
                        ("u", C(shaft_top, shaft_bot, shaft_r)))
            fz = head_c[2]

            def fem_canc(X, Y, Z, fz=fz):
                v = appearance.cancellous_hu(bone, X, Y, Z)
                w = np.clip((Z - (fz - 95.0)) / 30.0, 0.0, 1.0)   # fatty marrow in the shaft
                return (v * w + (-30.0) * (1.0 - w)).astype(np.float32)

            ops.append(Op("bone", femur, cort * 1.05, lab_f, fem_canc, bone.cortex_mm * 1.6))
    for x0, y0, z0, x1, y1, z1, r in bone.bridging:
        s = 1.0 if x0 > 0 else -1.0
        ops.append(Op("bone", Obj(("u", C(L((x0, y0, z0)), L((x1, y1, z1)), r))), cort,
                      LABELS["hip_left"] if s > 0 else LABELS["hip_right"], canc(50.0), 1.0))
    # --- metal -------------------------------------------------------------------------------------------------------
    for side in ("left", "right"):
        if imp.hip_prosthesis not in (side, "both"):
            continue
        fprim, head_c, head_r = fem_prims[side]
        s = 1.0 if side == "left" else -1.0
        shaft_c, shaft_r = _femur_shaft(side)
        shaft_top = L(shaft_c + np.array([0.0, 0.0, 12.0]))
        shaft_bot = L(shaft_c + np.array([0.0, 0.0, -400.0]))
        femur = Obj(("u", fprim), ("u", C(shaft_top, shaft_bot, shaft_r)),
                    ("s", Ellipsoid(tuple(head_c), (head_r + 6.0,) * 3)))
        ops.append(Op("bone", femur, cort, LABELS[f"femur_{side}"], -20.0, bone.cortex_mm * 1.6))
        neck_end = head_c + (L(shaft_c + np.array([0.0, 0.0, 150.0])) - head_c) * 0.35
        stem = Obj(("u", C(tuple(head_c), tuple(neck_end), 7.0)),
                   ("u", C(tuple(neck_end), tuple(L(shaft_c + np.array([0.0, 0.0, 40.0]))), 7.5)))
        ops.append(Op("metal", stem, imp.metal_hu, LABELS["implant"]))
        cup = Obj(("u", Ellipsoid(tuple(head_c), (head_r + 3.0,) * 3)),
                  ("s", Ellipsoid(tuple(head_c), (head_r,) * 3)),
                  ("i", Func(_cup_half(head_c, s), (-1e4, 1e4, -1e4, 1e4, -1e4, 1e4))))
        ops.append(Op("metal", cup, imp.metal_hu, LABELS["implant"]))
        ops.append(Op("metal", Obj(("u", Ellipsoid(tuple(head_c), (head_r - 1.0,) * 3))), imp.metal_hu, LABELS["implant"]))
    if imp.spinal_rods:
        pts = []
        for s in (1, -1):
            for z in (124.0, 88.0, 60.0):
                a = L((s * 20.0, 80.0, z))
                b = L((s * 16.0, 30.0, z - 4.0))
                pts.append(("u", C(tuple(a), tuple(b), 3.2)))
            pts.append(("u", C(tuple(L((s * 22.0, 84.0, 130.0))), tuple(L((s * 22.0, 84.0, 55.0))), 3.0)))
        ops.append(Op("metal", Obj(*pts), imp.metal_hu * 0.8, LABELS["implant"]))
    if p.has_tumour:
        for prim, hu in satellites(p.tumour):   # other lesions (v2 only), painted without the tumour label
            ops.append(Op("fill", Obj(("u", prim)), hu))
        ops.append(Op("tumour", Obj(("u", tumour_prim(p.tumour))), label=LABELS["tumour"]))
    return ops


def _half_space(tr: BoneTransform, side: float, half_gap: float) -> Callable:
    """sdf of the template half-space on ``side`` of the midline, ``half_gap`` mm away from it."""
    def f(X, Y, Z):
        qx, _, _ = tr.to_template(X, Y, Z)
        return (half_gap - side * qx) * tr.mean_scale
    return f


def _cup_half(centre: np.ndarray, side: float) -> Callable:
    """Half-space that keeps the lateral-superior hemisphere of an acetabular cup centred at ``centre``."""
    n = np.array([side * 0.7, 0.0, 0.7])

    def f(X, Y, Z):
        return -((X - centre[0]) * n[0] + (Y - centre[1]) * n[1] + (Z - centre[2]) * n[2])
    return f


@functools.lru_cache(maxsize=1)
def _hip_surface_points() -> np.ndarray:
    """Template points on the surface of both hip bones (every third voxel within 1 mm of it), (N, 3) mm."""
    pts = []
    for k in ("hip_left", "hip_right"):
        f = load_template().sdf[k]
        ijk = np.argwhere(np.abs(f.values[::3, ::3, ::3]) < 1.5) * 3
        pts.append(f.origin + f.step * ijk)
    return np.concatenate(pts)


def hip_landmarks(p: PatientParams) -> dict[str, float]:
    """This patient's hip bones along S (pelvis-local mm before ``scale``): ``lo`` and ``hi`` (lowest and highest
    point) and ``acetabulum`` (height of the hip joint centres)."""
    tr = BoneTransform(p.shape)
    z = tr.to_local(_hip_surface_points())[:, 2]
    joints = tr.to_local(np.stack([load_template().hip_centres[s] for s in ("left", "right")]))[:, 2]
    return {"lo": float(z.min()), "hi": float(z.max()), "acetabulum": float(joints.mean())}


def sacrum_geometry(p: PatientParams) -> SacrumGeometry:
    """The sacrum of a patient with pelvis shape ``p.shape`` (for tumour placement)."""
    return SacrumGeometry(load_template(), BoneTransform(p.shape))
