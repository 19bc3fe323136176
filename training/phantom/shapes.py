"""Implicit shapes: approximate signed distance functions (mm, negative inside) in the pelvis-local frame.

Coordinates are passed as broadcastable arrays ``X, Y, Z`` (local mm: L, P, S). ``Obj`` combines primitives by
constructive solid geometry: union of its ``"u"`` items, minus its ``"s"`` items, intersected with its ``"i"``
items. Every primitive has a local bounding box ``bbox = (xmin, xmax, ymin, ymax, zmin, zmax)`` outside which
it is known to be positive, so that rendering evaluates it only there.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

BBox = tuple[float, float, float, float, float, float]


def ell_sdf(u, v, w, a, b, c):
    """Approximate signed distance to an axis-aligned ellipsoid with semi-axes a, b, c (Quilez)."""
    k0 = np.sqrt((u / a) ** 2 + (v / b) ** 2 + (w / c) ** 2)
    k1 = np.sqrt((u / (a * a)) ** 2 + (v / (b * b)) ** 2 + (w / (c * c)) ** 2)
    return k0 * (k0 - 1.0) / (k1 + 1e-6)


def ell2_sdf(u, v, a, b):
    """Approximate signed distance to an ellipse (infinite elliptic cylinder)."""
    k0 = np.sqrt((u / a) ** 2 + (v / b) ** 2)
    k1 = np.sqrt((u / (a * a)) ** 2 + (v / (b * b)) ** 2)
    return k0 * (k0 - 1.0) / (k1 + 1e-6)


class Prim:
    """A shape: ``sdf(X, Y, Z)`` and a bounding box."""

    bbox: BBox

    def sdf(self, X, Y, Z):  # pragma: no cover - interface
        raise NotImplementedError


class Ellipsoid(Prim):
    def __init__(self, c, r):
        self.c, self.r = np.asarray(c, np.float32), np.asarray(r, np.float32)
        self.bbox = (c[0] - r[0], c[0] + r[0], c[1] - r[1], c[1] + r[1], c[2] - r[2], c[2] + r[2])

    def sdf(self, X, Y, Z):
        return ell_sdf(X - self.c[0], Y - self.c[1], Z - self.c[2], *self.r)


class Capsule(Prim):
    def __init__(self, a, b, r):
        self.a, self.b, self.r = np.asarray(a, np.float32), np.asarray(b, np.float32), float(r)
        lo, hi = np.minimum(self.a, self.b) - r, np.maximum(self.a, self.b) + r
        self.bbox = (lo[0], hi[0], lo[1], hi[1], lo[2], hi[2])

    def sdf(self, X, Y, Z):
        ba = self.b - self.a
        px, py, pz = X - self.a[0], Y - self.a[1], Z - self.a[2]
        h = np.clip((px * ba[0] + py * ba[1] + pz * ba[2]) / float(ba @ ba + 1e-9), 0.0, 1.0)
        return np.sqrt((px - h * ba[0]) ** 2 + (py - h * ba[1]) ** 2 + (pz - h * ba[2]) ** 2) - self.r


class Func(Prim):
    """A shape given by an arbitrary sdf function and an explicit bounding box."""

    def __init__(self, fn: Callable, bbox: BBox):
        self.fn, self.bbox = fn, tuple(float(v) for v in bbox)

    def sdf(self, X, Y, Z):
        return self.fn(X, Y, Z)


class Dilate(Prim):
    """``p`` grown by ``mm`` (negative: shrunk)."""

    def __init__(self, p: Prim, mm: float):
        self.p, self.mm = p, mm
        b = p.bbox
        m = max(mm, 0.0)
        self.bbox = (b[0] - m, b[1] + m, b[2] - m, b[3] + m, b[4] - m, b[5] + m)

    def sdf(self, X, Y, Z):
        return self.p.sdf(X, Y, Z) - self.mm


class Obj:
    """CSG object: union of 'u' items, minus 's' items, intersected with 'i' items."""

    def __init__(self, *items: tuple[str, Prim]):
        self.items = list(items)
        us = [p.bbox for m, p in items if m == "u"]
        if not us:
            raise ValueError("an Obj needs at least one 'u' item")
        self.bbox = (min(b[0] for b in us), max(b[1] for b in us), min(b[2] for b in us),
                     max(b[3] for b in us), min(b[4] for b in us), max(b[5] for b in us))
