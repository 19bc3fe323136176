"""Key images: true-colour Secondary Capture images of the findings, for PACS viewers that show neither SEG
overlays nor TID 1500 SR content.

What is drawn (:func:`render_key_images`), on a canvas of :data:`CANVAS` pixels (width x height):

* a red banner "RESEARCH USE ONLY - NOT FOR DIAGNOSIS" across the top;
* left: one view of the source CT at its own resolution (nearest-neighbour sampling of the series' voxels,
  never the models' 3 mm grid; an integer zoom when the slice fits the panel), in a fixed window
  (:data:`WINDOW_HU`), with the outlines of the tumour (red) and of the left / right hip bone (green /
  blue) drawn *inside* the structures (:data:`OUTLINE_PX` display pixels wide), the hip-frame origin
  (white disc) and its axes projected onto the view (x magenta, y orange, z yellow, :data:`AXIS_MM` long),
  orientation letters on the four sides and a scale bar;
* right: the findings panel (predicted type, the six probabilities as bars, tumour volume, hip-frame
  location, hip-bone volumes, warnings, the models' versions and the application's version).

Views (``tumour_found``): an axial, a coronal and a sagittal view through the tumour centroid. The views are
the planes of the CT grid: axial = one slice (rows h, columns w, as stored), coronal = fixed row h (rows d,
columns w), sagittal = fixed column w (rows d, columns h); d is flipped where needed so that the patient's
head is up. For an axial series in the usual orientation that is the radiological convention (patient's
right on the viewer's left; anterior up, or anterior left in the sagittal view); the letters are computed
from the series' direction cosines, so they are right for any orientation. ``no_tumour``: one axial view
through the hip bones, saying "No sacral tumour detected"; ``not_applicable``: one axial view (through the
hip bones when segmented, else the middle slice) with the reason.

The mapping of canvas pixels to CT voxels is returned with every image (:class:`ViewGeometry`), so tests can
check each outline pixel against the SEG. No patient identifier is ever drawn.

Arrays follow ``core.volume``: CT and label maps D-H-W on the series grid, affine (d, h, w, 1) -> LPS mm.
"""
from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import highdicom as hd
import numpy as np
import pydicom
from scipy import ndimage

from core import codes, provenance
from core.status import Status
from core.volume import Volume

CANVAS = (1200, 800)                 # width, height in pixels
BANNER_PX = 44
PANEL_BOX = (40, BANNER_PX + 60, 680, 612)   # x0, y0, width, height of the CT image box on the canvas
FINDINGS_X0 = 770
WINDOW_HU = (150.0, 1000.0)          # level, width: bone and soft tissue both readable
OUTLINE_PX = 2
EDGE_PX = 6                          # no text within this many pixels of the right edge
WRAP_CHARS = 42                      # findings panel text: characters per line (about 410 px at 14 pt)
AXIS_MM = 50.0
RESEARCH_TEXT = "RESEARCH USE ONLY - NOT FOR DIAGNOSIS"
KEY_IMAGES_SERIES_DESCRIPTION = "RESEARCH USE ONLY: sacral tumour AI key images"

#: exact RGB colours of the overlays (tests find outline pixels by colour: none is a grey level)
COLOURS: dict[str, tuple[int, int, int]] = {
    "tumour": (255, 32, 32), "hip_left": (40, 220, 60), "hip_right": (40, 150, 255),
    "axis_x": (255, 0, 255), "axis_y": (255, 150, 0), "axis_z": (255, 255, 0), "origin": (255, 255, 255),
    "banner": (190, 0, 0), "background": (0, 0, 0), "bar": (90, 90, 90), "bar_predicted": (255, 32, 32),
}
#: label value in the label map -> overlay colour name (values of core.postprocess)
LABEL_COLOURS = {1: "hip_left", 2: "hip_right", 3: "tumour"}


def class_name(key: str) -> str:
    """The display name of a class key of the classifier's metadata (:func:`core.codes.class_display_name`)."""
    return codes.class_display_name(key)

VIEW_AXES = {"axial": (0, 1, 2), "coronal": (1, 0, 2), "sagittal": (2, 0, 1)}  # fixed, row, column axis


@dataclass(frozen=True)
class ViewGeometry:
    """Where a view's CT voxels lie on the canvas.

    Canvas pixel (y, x) with ``y0 <= y < y0 + len(row_index)`` and ``x0 <= x < x0 + len(col_index)`` shows
    the voxel whose index along ``fixed_axis`` is ``fixed_index``, along ``row_axis`` is
    ``row_index[y - y0]`` and along ``col_axis`` is ``col_index[x - x0]`` (axes: 0 = d, 1 = h, 2 = w).
    """

    view: str
    fixed_axis: int
    fixed_index: int
    row_axis: int
    col_axis: int
    row_index: np.ndarray
    col_index: np.ndarray
    y0: int
    x0: int
    pixel_mm: float                  # edge of one display pixel in mm (square)
    row_scale: float                 # display pixels per voxel along row_axis (spacing / pixel_mm)
    col_scale: float                 # display pixels per voxel along col_axis
    rows_flipped: bool               # rows run against row_axis (head up)

    def voxel(self, y: np.ndarray, x: np.ndarray) -> np.ndarray:
        """(N, 3) D-H-W voxel indices of canvas pixels (y, x) inside the image box."""
        out = np.zeros((len(y), 3), dtype=int)
        out[:, self.fixed_axis] = self.fixed_index
        out[:, self.row_axis] = self.row_index[np.asarray(y) - self.y0]
        out[:, self.col_axis] = self.col_index[np.asarray(x) - self.x0]
        return out

    def to_canvas(self, dhw: np.ndarray) -> np.ndarray:
        """(N, 2) canvas (y, x), fractional, of (N, 3) fractional D-H-W indices (projected onto the view).

        Inverse of the sampling ``index[k] = floor((k + 0.5) * pixel_mm / spacing)`` (rows reversed when
        flipped): voxel centre i lies at display position ``(i + 0.5) * spacing / pixel_mm - 0.5``.
        """
        dhw = np.atleast_2d(np.asarray(dhw, float))
        r = (dhw[:, self.row_axis] + 0.5) * self.row_scale - 0.5
        if self.rows_flipped:
            r = len(self.row_index) - 1 - r
        c = (dhw[:, self.col_axis] + 0.5) * self.col_scale - 0.5
        return np.stack([self.y0 + r, self.x0 + c], axis=1)


@dataclass
class KeyImage:
    """One rendered key image: ``pixels`` (height, width, 3) uint8 RGB, its view and geometry (None when the
    image shows no CT)."""

    view: str
    title: str
    pixels: np.ndarray
    geometry: ViewGeometry | None


# ------------------------------------------------------------------------------------------- geometry
def _display_indices(n: int, spacing: float, pixel_mm: float, flip: bool) -> np.ndarray:
    m = max(1, int(round(n * spacing / pixel_mm)))
    idx = np.minimum(((np.arange(m) + 0.5) * pixel_mm / spacing).astype(int), n - 1)
    return idx[::-1].copy() if flip else idx


def view_geometry(ct: Volume, view: str, centre_dhw: Sequence[float]) -> ViewGeometry:
    """The canvas placement of ``view`` through voxel ``centre_dhw`` (fractional D-H-W) of ``ct``.

    Square display pixels; an integer zoom of the finest spacing of the two displayed axes when the view fits
    the image box, otherwise a uniform reduction. Rows along d are flipped when d points to the feet, so that
    the head is up.
    """
    fixed, row_axis, col_axis = VIEW_AXES[view]
    sp = ct.spacing
    n = ct.shape
    fine = float(min(sp[row_axis], sp[col_axis]))
    extent_px = max(n[row_axis] * sp[row_axis], n[col_axis] * sp[col_axis]) / fine
    box = min(PANEL_BOX[2], PANEL_BOX[3])
    zoom = float(np.floor(box / extent_px)) if extent_px <= box else box / extent_px
    pixel_mm = fine / zoom
    flip_rows = row_axis == 0 and ct.direction[2, 0] > 0  # d towards the head: the last slice goes on top
    rows = _display_indices(n[row_axis], sp[row_axis], pixel_mm, flip_rows)
    cols = _display_indices(n[col_axis], sp[col_axis], pixel_mm, False)
    y0 = PANEL_BOX[1] + (PANEL_BOX[3] - len(rows)) // 2
    x0 = PANEL_BOX[0] + (PANEL_BOX[2] - len(cols)) // 2
    fixed_index = int(np.clip(round(float(centre_dhw[fixed])), 0, n[fixed] - 1))
    return ViewGeometry(view, fixed, fixed_index, row_axis, col_axis, rows, cols, y0, x0, pixel_mm,
                        float(sp[row_axis] / pixel_mm), float(sp[col_axis] / pixel_mm), bool(flip_rows))


def _plane(array: np.ndarray, g: ViewGeometry) -> np.ndarray:
    sl: list[Any] = [slice(None)] * 3
    sl[g.fixed_axis] = g.fixed_index
    plane = array[tuple(sl)]  # remaining axes in increasing order
    if g.row_axis > g.col_axis:
        plane = plane.T
    return plane[np.ix_(g.row_index, g.col_index)]


def _direction_of(ct: Volume, axis: int, flipped: bool) -> np.ndarray:
    v = ct.direction[:, axis]
    return -v if flipped else v


def orientation_letters(v: np.ndarray, dicom: bool = False) -> str:
    """Letters of an LPS direction, strongest first (L/R, P/A, S/I; with ``dicom`` H/F for S/I, one letter)."""
    names = (("L", "R"), ("P", "A"), ("H", "F") if dicom else ("S", "I"))
    order = np.argsort(-np.abs(v))
    letters = [names[i][0 if v[i] > 0 else 1] for i in order if abs(v[i]) >= 0.25]
    return letters[0] if dicom else "".join(letters)


def _view_directions(ct: Volume, g: ViewGeometry) -> tuple[np.ndarray, np.ndarray]:
    """LPS unit vectors of the canvas' downward (rows) and rightward (columns) directions."""
    down = _direction_of(ct, g.row_axis, g.rows_flipped)
    right = _direction_of(ct, g.col_axis, False)
    return down, right


# -------------------------------------------------------------------------------------------- drawing
def _paint(canvas: np.ndarray, ys: np.ndarray, xs: np.ndarray, colour: tuple[int, int, int],
           clip: tuple[int, int, int, int] | None = None) -> None:
    ys, xs = np.round(ys).astype(int), np.round(xs).astype(int)
    y0, x0, y1, x1 = clip or (0, 0, canvas.shape[0], canvas.shape[1])
    ok = (ys >= y0) & (ys < y1) & (xs >= x0) & (xs < x1)
    canvas[ys[ok], xs[ok]] = colour


def _line(canvas: np.ndarray, p: np.ndarray, q: np.ndarray, colour: tuple[int, int, int], width: int = 3,
          clip: tuple[int, int, int, int] | None = None) -> None:
    n = int(np.ceil(np.hypot(*(q - p)))) * 2 + 2
    t = np.linspace(0.0, 1.0, n)
    ys, xs = p[0] + t * (q[0] - p[0]), p[1] + t * (q[1] - p[1])
    for dy in range(-(width // 2), width - width // 2):
        for dx in range(-(width // 2), width - width // 2):
            _paint(canvas, ys + dy, xs + dx, colour, clip)


def _disc(canvas: np.ndarray, c: np.ndarray, r: float, colour: tuple[int, int, int],
          clip: tuple[int, int, int, int] | None = None) -> None:
    yy, xx = np.mgrid[-int(r):int(r) + 1, -int(r):int(r) + 1]
    inside = yy ** 2 + xx ** 2 <= r * r
    _paint(canvas, c[0] + yy[inside], c[1] + xx[inside], colour, clip)


def _ct_panel(canvas: np.ndarray, ct: Volume, labels: Volume | None, g: ViewGeometry) -> None:
    level, width = WINDOW_HU
    hu = _plane(ct.array, g).astype(np.float32)
    grey = (np.clip((hu - (level - width / 2)) / width, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    h, w = grey.shape
    box = canvas[g.y0:g.y0 + h, g.x0:g.x0 + w]
    box[...] = grey[..., None]
    if labels is None:
        return
    lab = _plane(labels.array, g)
    for value in sorted(LABEL_COLOURS):  # tumour last: on top
        mask = lab == value
        if not mask.any():
            continue
        inner = ndimage.binary_erosion(mask, iterations=OUTLINE_PX, border_value=0)
        box[mask & ~inner] = COLOURS[LABEL_COLOURS[value]]


def _frame_overlay(canvas: np.ndarray, ct: Volume, g: ViewGeometry, frame: Any) -> list[str]:
    """Draw the hip-frame origin and the axes visible in this view; returns the names of the drawn axes."""
    clip = (g.y0, g.x0, g.y0 + len(g.row_index), g.x0 + len(g.col_index))
    o = g.to_canvas(ct.lps_to_index(frame.origin_lps))[0]
    drawn = []
    for k, name in enumerate(("x", "y", "z")):
        tip = g.to_canvas(ct.lps_to_index(frame.origin_lps + AXIS_MM * frame.axes[k]))[0]
        length = float(np.hypot(*(tip - o)))
        if length < 0.35 * AXIS_MM / g.pixel_mm:  # nearly perpendicular to the view: not drawn
            continue
        colour = COLOURS[f"axis_{name}"]
        _line(canvas, o, tip, colour, 3, clip)
        u = (tip - o) / length
        for a in (np.radians(28.0), -np.radians(28.0)):
            rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
            _line(canvas, tip, tip - 14.0 * (rot @ u), colour, 3, clip)
        drawn.append(name)
    _disc(canvas, o, 5.0, COLOURS["origin"], clip)
    return drawn


def _scale_bar_mm(g: ViewGeometry) -> float:
    width_mm = len(g.col_index) * g.pixel_mm
    for mm in (100.0, 50.0, 20.0, 10.0, 5.0):
        if mm <= 0.3 * width_mm:
            return mm
    return 5.0


# ----------------------------------------------------------------------------------------- the canvas
def _fmt_signed(values: Sequence[float], digits: int) -> str:
    return ", ".join(f"{float(v):+.{digits}f}" for v in values)


def _render(view: str, title: str, ct: Volume | None, labels: Volume | None, g: ViewGeometry | None,
            frame: Any, findings: Mapping[str, Any], app_version: str) -> np.ndarray:
    """One key image as (height, width, 3) uint8 RGB: numpy pixels for the CT and overlays, matplotlib (Agg,
    DejaVu Sans, shipped with matplotlib) for the text."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    width, height = CANVAS
    canvas = np.zeros((height, width, 3), np.uint8)
    canvas[:BANNER_PX] = COLOURS["banner"]
    texts: list[tuple[float, float, str, dict[str, Any]]] = []  # (x px, y px from top, text, style)

    def text(x: float, y: float, s: str, size: float = 15, **kw: Any) -> None:
        texts.append((x, y, s, {"fontsize": size, "color": "white", **kw}))

    text(width / 2, BANNER_PX / 2, RESEARCH_TEXT, 21, weight="bold", ha="center", va="center")
    drawn_axes: list[str] = []
    if ct is not None and g is not None:
        _ct_panel(canvas, ct, labels, g)
        if frame is not None:
            drawn_axes = _frame_overlay(canvas, ct, g, frame)
        h, w = len(g.row_index), len(g.col_index)
        down, right = _view_directions(ct, g)
        cy, cx = g.y0 + h / 2, g.x0 + w / 2
        letter: dict[str, Any] = dict(size=20, weight="bold", ha="center", va="center", color="#ffff66")
        text(cx, g.y0 - 16, orientation_letters(-down), **letter)
        text(cx, g.y0 + h + 16, orientation_letters(down), **letter)
        text(g.x0 - 18, cy, orientation_letters(-right), **letter)
        text(g.x0 + w + 18, cy, orientation_letters(right), **letter)
        bar_mm = _scale_bar_mm(g)
        bar_px = int(round(bar_mm / g.pixel_mm))
        yb = min(height - 20, g.y0 + h + 34)
        xb = g.x0 + w - bar_px
        canvas[yb:yb + 5, xb:xb + bar_px] = 255
        text(xb + bar_px / 2, yb + 16, f"{bar_mm:g} mm", 14, ha="center", va="center")
        text(PANEL_BOX[0], BANNER_PX + 16, title, 16, weight="bold", va="center")
    else:
        text(PANEL_BOX[0] + PANEL_BOX[2] / 2, PANEL_BOX[1] + PANEL_BOX[3] / 2, "no CT view", 18, ha="center")

    # findings panel
    x, y = FINDINGS_X0, BANNER_PX + 26
    status = findings.get("status")
    text(x, y, "Sacral tumour AI result", 19, weight="bold")
    y += 36
    if status == Status.TUMOUR_FOUND:
        cls = findings.get("predicted_class")
        probs = findings.get("probabilities") or {}
        if cls:
            text(x, y, f"Predicted type: {class_name(cls)}", 18, weight="bold", color="#ff6060")
            y += 30
        for key in probs:  # in the classifier's class order (its metadata)
            p = float(probs[key])
            text(x, y, class_name(key), 14, va="center")
            bx, bw = x + 192, 150
            canvas[int(y) - 8:int(y) + 8, bx:bx + bw] = (40, 40, 40)
            canvas[int(y) - 8:int(y) + 8, bx:bx + int(round(bw * p))] = \
                COLOURS["bar_predicted" if key == cls else "bar"]
            text(bx + bw + 8, y, f"{p:.2f}", 14, va="center")
            y += 25
        y += 10
        t = findings.get("tumour") or {}
        text(x, y, f"Tumour volume: {float(t.get('volume_ml', 0.0)):.1f} mL", 16)
        y += 28
        if t.get("location_hip_frame") is not None:
            text(x, y, "Hip-frame location (u, v, w):", 15)
            text(x + 16, y + 22, _fmt_signed(t["location_hip_frame"], 2), 15)
            y += 48
        if t.get("location_hip_frame_mm") is not None:
            text(x, y, "(dx, dy, dz) from the origin, mm:", 15)
            text(x + 16, y + 22, _fmt_signed(t["location_hip_frame_mm"], 1), 15)
            y += 48
    elif status == Status.NO_TUMOUR:
        text(x, y, "No sacral tumour detected", 19, weight="bold", color="#80ff80")
        y += 40
    else:
        text(x, y, "Not applicable:", 20, weight="bold", color="#ffb040")
        text(x, y + 26, "no analysis result", 18, weight="bold", color="#ffb040")
        y += 60
    hip = findings.get("hip_bone") or {}
    if hip.get("left_volume_ml") is not None:
        text(x, y, f"Hip bones: left {float(hip['left_volume_ml']):.0f} mL, right "
                   f"{float(hip.get('right_volume_ml') or 0):.0f} mL", 15)
        y += 28
    prefix = "not applicable: "
    warnings = list(findings.get("warnings") or [])
    sections = [("Warnings:", warnings)]
    if status == Status.NOT_APPLICABLE:  # the reason first, then the other warnings
        sections = [("Reason:", [w[len(prefix):] for w in warnings if w.startswith(prefix)]),
                    ("Warnings:", [w for w in warnings if not w.startswith(prefix)])]
    bottom = height - 185  # the legend starts below
    for heading, items in sections:
        if not items or y > bottom - 45:
            continue
        y += 4
        text(x, y, heading, 15, weight="bold", color="#ffb040")
        y += 24
        lines = [("- " if i == 0 else "  ") + ln for w in items for i, ln in enumerate(textwrap.wrap(w, WRAP_CHARS))]
        room = int((bottom - y) // 21)
        if len(lines) > room:
            lines = lines[:max(0, room - 1)] + ["  (more in the SR and result.json)"]
        for ln in lines:
            text(x, y, ln, 14, color="#ffd080")
            y += 21
    # legend and provenance, bottom of the panel
    y = height - 170
    legend = [("tumour", "sacral tumour"), ("hip_left", "hip bone left"), ("hip_right", "hip bone right")]
    for i, (key, label) in enumerate(legend):
        yy = int(y + 20 * i)
        canvas[yy - 5:yy + 5, x:x + 22] = COLOURS[key]
        text(x + 30, yy, label, 13, va="center")
    if frame is not None and g is not None:
        names = {"x": "x: left", "y": "y: posterior", "z": "z: superior"}
        yy = int(y)
        xx = x + 190
        text(xx, yy, "hip frame:", 13, va="center")
        for i, k in enumerate(("x", "y", "z")):
            colour = np.array(COLOURS[f"axis_{k}"]) / 255.0
            text(xx + 10, yy + 20 * (i + 1), names[k] + ("" if k in drawn_axes else " (across)"), 13,
                 va="center", color=tuple(colour))
    models = findings.get("models") or {}
    prov = textwrap.wrap("Models: " + (provenance.model_versions(models).replace(";", ",") or "none run"), 54)
    footer = prov[:2] + [f"App {app_version}; window L {WINDOW_HU[0]:g} W {WINDOW_HU[1]:g} HU",
                         "Not reviewed by a physician."]
    for i, line in enumerate(footer):
        text(x, height - 10 - 17 * (len(footer) - 1 - i), line, 12, color="#c8c8c8")

    fig = Figure(figsize=(width / 100, height / 100), dpi=100)
    fig.figimage(canvas, 0, 0, origin="upper", resize=False)
    for tx, ty, s, style in texts:
        fig.text(tx / width, 1.0 - ty / height, s, family="DejaVu Sans", **style)
    agg = FigureCanvasAgg(fig)
    renderer = agg.get_renderer()
    for artist in fig.texts:  # a long line (e.g. a long class name) is set smaller, never cut by the edge
        size = float(artist.get_fontsize())
        while artist.get_window_extent(renderer).x1 > width - EDGE_PX and size > 8:
            size -= 1
            artist.set_fontsize(size)
    agg.draw()
    rgb = np.asarray(agg.buffer_rgba())[..., :3].copy()
    if rgb.shape != (height, width, 3):
        raise RuntimeError(f"rendered canvas has shape {rgb.shape}, expected {(height, width, 3)}")
    return rgb


def _centroid_dhw(mask: np.ndarray) -> np.ndarray | None:
    idx = np.argwhere(mask)
    return idx.mean(axis=0) if len(idx) else None


def render_key_images(ct: Volume, labels: Volume | None, findings: Mapping[str, Any], frame: Any = None,
                      *, app_version: str = "") -> list[KeyImage]:
    """The key images of one analysis (see the module docstring for what each shows).

    Args:
        ct: the analysed CT, HU, D-H-W on the series grid, affine (d, h, w, 1) -> LPS mm.
        labels: the label map on the same grid (0 background, 1 hip bone left, 2 right, 3 tumour), or None.
        findings: the result document (``status``, ``tumour`` with ``centroid_lps_mm``, ``probabilities``,
            ``predicted_class``, ``hip_bone``, ``warnings``, ``models``).
        frame: the hip frame (``core.hip_frame.HipFrame``) or None (then no origin / axes are drawn).
        app_version: printed with the models' versions.

    Returns:
        three images (axial, coronal, sagittal) for ``tumour_found``, one axial image otherwise.
    """
    status = findings.get("status")
    if labels is not None and labels.shape != ct.shape:
        raise ValueError(f"labels {labels.shape} and CT {ct.shape} are not on one grid")
    lab = labels.array if labels is not None else None
    if status == Status.TUMOUR_FOUND:
        t = findings.get("tumour") or {}
        if t.get("centroid_lps_mm") is not None:
            centre = ct.lps_to_index(np.asarray(t["centroid_lps_mm"], float))[0]
        elif lab is not None and (lab == 3).any():
            centre = _centroid_dhw(lab == 3)
        else:
            raise ValueError("status tumour_found needs the tumour centroid or a tumour in the label map")
        out = []
        for view in ("axial", "coronal", "sagittal"):
            g = view_geometry(ct, view, centre)
            title = f"{view.capitalize()} view through the tumour centroid"
            out.append(KeyImage(view, title, _render(view, title, ct, labels, g, frame, findings, app_version), g))
        return out
    hips = None if lab is None else _centroid_dhw((lab == 1) | (lab == 2))
    if hips is not None:
        centre, where = hips, "through the hip bones"
    else:
        centre, where = (np.asarray(ct.shape, float) - 1) / 2, "middle slice of the series"
    g = view_geometry(ct, "axial", centre)
    title = f"Axial view, {where}"
    return [KeyImage("axial", title, _render("axial", title, ct, labels, g, frame, findings, app_version), g)]


# ------------------------------------------------------------------------------------------ DICOM
def build_key_image_datasets(
    source_datasets: Sequence[pydicom.Dataset],
    images: Sequence[KeyImage],
    ct: Volume,
    *,
    app_version: str,
    series_number: int = 902,
    series_instance_uid: str | None = None,
) -> list[hd.sc.SCImage]:
    """Secondary Capture Image Storage instances (true colour RGB, 8 bit) of the key images, one series.

    Patient and study come from the source series (like the SEG and SR); the images carry Burned In
    Annotation YES (the findings are burned in; no patient identifier is), Patient Orientation of the CT
    view, the source's Body Part Examined, Software Versions (the application) and UTF-8 as character set.
    No Frame of Reference: the canvas (panel and text) has no patient geometry.
    """
    if not source_datasets:
        raise ValueError("no source datasets")
    series_uid = series_instance_uid or hd.UID()
    out = []
    for number, img in enumerate(images, start=1):
        if img.pixels.dtype != np.uint8 or img.pixels.ndim != 3 or img.pixels.shape[2] != 3:
            raise ValueError(f"key image {img.view}: expected (rows, columns, 3) uint8, got {img.pixels.shape}")
        if img.geometry is not None:
            down, right = _view_directions(ct, img.geometry)
            orientation = (orientation_letters(right, dicom=True), orientation_letters(down, dicom=True))
        else:
            orientation = ("L", "P")
        sc = hd.sc.SCImage.from_ref_dataset(
            ref_dataset=source_datasets[0],
            pixel_array=img.pixels,
            photometric_interpretation=hd.PhotometricInterpretationValues.RGB,
            bits_allocated=8,
            coordinate_system=hd.CoordinateSystemNames.PATIENT,
            series_instance_uid=series_uid,
            series_number=series_number,
            sop_instance_uid=hd.UID(),
            instance_number=number,
            manufacturer=provenance.MANUFACTURER,
            patient_orientation=orientation,
            transfer_syntax_uid=pydicom.uid.ExplicitVRLittleEndian,
            series_description=KEY_IMAGES_SERIES_DESCRIPTION,
            manufacturer_model_name=provenance.MANUFACTURER_MODEL_NAME,
            software_versions=provenance.software_versions(app_version),
            device_serial_number=provenance.DEVICE_SERIAL_NUMBER,
            specific_character_set=provenance.OUTPUT_CHARACTER_SET,
        )
        sc.BurnedInAnnotation = "YES"
        sc.RecognizableVisualFeatures = "NO"
        sc.LossyImageCompression = "00"
        sc.ConversionType = "WSD"  # workstation: rendered by this application
        sc.ImageComments = img.title
        sc.DerivationDescription = f"{img.title}; sacral tumour AI findings burned in ({RESEARCH_TEXT})"[:1024]
        provenance.set_body_part(sc, source_datasets)
        provenance.copy_patient_study(sc, source_datasets)
        codes.normalise_meanings(sc)
        out.append(sc)
    return out


