"""A contact sheet of random phantoms, so that a radiologist can judge the synthetic world at a glance.

``python -m training.phantom.gallery --out docs/phantom_gallery.png --n 6 --seed 5 [--full-size]`` renders ``n``
phantoms of the varied protocol and draws, per phantom, an axial slice through the hip joints (bone window), an
axial slice through the upper sacrum (soft-tissue window), a coronal and a sagittal slice through the hip-bone /
tumour centre, with the outlines of the left hip (green), right hip (blue) and tumour (red). The caption gives
the case's class, age, sex, coverage, kernel, implants and marrow density.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

import numpy as np

from core.segment import canonical_resample
from core.volume import Volume
from training.phantom.acquisition import sample_scan
from training.phantom.params import LABELS, TUMOUR_CLASSES
from training.phantom.patient import sample_patient
from training.phantom.render import render

WINDOWS = {"bone": (400.0, 1800.0), "soft": (40.0, 400.0)}
OUTLINES = ((LABELS["hip_left"], "lime"), (LABELS["hip_right"], "deepskyblue"), (LABELS["tumour"], "red"))


def _window(img: np.ndarray, name: str) -> np.ndarray:
    c, w = WINDOWS[name]
    return np.clip((img - (c - w / 2)) / w, 0.0, 1.0)


def contact_sheet(out: Path, n: int = 6, seed: int = 5, full_size: bool = False, protocol: str = "varied",
                  tumour_world: str = "v1") -> Path:
    """Render ``n`` phantoms (tumours of ``tumour_world``) and write the contact sheet PNG to ``out``; returns
    ``out``."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    classes = list(TUMOUR_CLASSES) + ["none"]
    fig, axes = plt.subplots(n, 4, figsize=(16, 4.3 * n), facecolor="black")
    axes = np.atleast_2d(axes)
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        p = sample_patient(rng, f"G{i:03d}", classes[i % len(classes)], tumour_world=tumour_world)
        scan = sample_scan(rng, p, full_size=full_size, protocol=protocol)
        ct, lab = render(p, scan)
        # display on a 1 mm canonical LPS grid (feet-first and rotated series look like head-first ones)
        sp = (1.0, 1.0, 1.0)
        ctc = canonical_resample(ct, sp)
        labc = canonical_resample(lab, sp, is_label=True)
        a, lb = ctc.array, labc.array
        hips = np.argwhere((lb == LABELS["hip_left"]) | (lb == LABELS["hip_right"]))
        tum = np.argwhere(lb == LABELS["tumour"])
        centre = (tum.mean(0) if len(tum) else hips.mean(0) if len(hips) else np.array(a.shape) / 2).astype(int)
        fem = np.argwhere(lb == LABELS["femur_left"])
        k_hip = int(fem[:, 0].max()) - 10 if len(fem) else int(centre[0])
        k_hip = int(np.clip(k_hip, 0, a.shape[0] - 1))
        sac = np.argwhere(lb == LABELS["sacrum"])
        k_sac = int(np.clip(sac[:, 0].max() - 25 if len(sac) else centre[0], 0, a.shape[0] - 1))
        views = [(a[k_hip], lb[k_hip], "bone", f"axial hips (z {k_hip} mm)"),
                 (a[k_sac], lb[k_sac], "soft", "axial upper sacrum"),
                 (a[:, centre[1], :][::-1], lb[:, centre[1], :][::-1], "bone", "coronal"),
                 (a[:, :, centre[2]][::-1], lb[:, :, centre[2]][::-1], "soft", "sagittal")]
        for j, (img, seg, win, title) in enumerate(views):
            ax = axes[i, j]
            ax.imshow(_window(img, win), cmap="gray", interpolation="nearest")
            for value, colour in OUTLINES:
                m = seg == value
                if m.any():
                    ax.contour(m.astype(float), levels=[0.5], colors=colour, linewidths=0.7)
            ax.set_title(title, color="white", fontsize=9)
            ax.axis("off")
        b, imp = p.bone, p.implants
        caption = (f"{p.tumour_class}, {p.age} y {p.sex}; {scan.coverage}, {scan.patient_position}, kernel "
                   f"{scan.kernel}, {scan.matrix} px of {scan.pixel_spacing_mm:.2f} mm, {scan.slice_thickness_mm:g} mm "
                   f"slices, noise {scan.noise_hu:.0f} HU; marrow {b.marrow_hu:.0f} HU, cortex {b.cortex_mm:.1f} mm; "
                   f"prosthesis {imp.hip_prosthesis}{', rods' if imp.spinal_rods else ''}; arms {p.body.arms}")
        axes[i, 0].text(0, -0.08, caption, transform=axes[i, 0].transAxes, color="white", fontsize=9,
                        va="top")
    fig.tight_layout(h_pad=2.5)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=70, facecolor="black")
    plt.close(fig)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.phantom.gallery", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("docs/phantom_gallery.png"))
    ap.add_argument("--n", type=int, default=6)
    ap.add_argument("--seed", type=int, default=5)
    ap.add_argument("--full-size", action="store_true")
    ap.add_argument("--protocol", choices=["standard", "varied"], default="varied")
    ap.add_argument("--tumour-world", choices=["v1", "v2"], default="v1")
    a = ap.parse_args(argv)
    print(contact_sheet(a.out, a.n, a.seed, a.full_size, a.protocol, a.tumour_world))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
