"""The application's decisions on a series and its segmentation, as plain functions returning verdicts.

Each rule takes measured values (mm, mL, voxel counts) and thresholds of :class:`core.config.AnalysisConfig`,
and returns a :class:`Verdict`: whether the analysis goes on, and the warnings that say why not (or what to
keep in mind). A not-applicable verdict's first warning starts with ``not applicable:`` and is the reason that
result.json, the SR and the key image show. Nothing here reads files or images: the operators measure (with
:mod:`core.hip_frame`, :mod:`core.volume`) and apply the verdict.

Rules:

* coverage: a scan shorter than ``min_coverage_mm`` along the patient's superior axis cannot hold a pelvis;
* memory guard: a series with more than ``max_voxels`` voxels (rows x columns x slices, from the headers) is
  refused (exit 2) before any pixel is decoded;
* hip-bone plausibility: a side below ``min_hip_bone_volume_ml`` counts as absent; a larger / smaller volume
  ratio above ``max_hip_bone_volume_ratio`` is an implausible segmentation (outside the models' domain); hip
  bone touching a face of the grid is cut by the scan edge (the hip-frame location is then approximate);
* tumour threshold: a tumour below ``min_tumour_volume_ml`` counts as none; rejected candidates below it are
  not worth a reader's attention; a tumour touching a face of the grid may be underestimated;
* tumour confidence: a tumour whose mean probability is below the tumour model's ``min_mean_probability``
  (its metadata: the threshold belongs to the weights) counts as none, with a warning naming its volume.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from core.config import AnalysisConfig
from core.volume import Volume

NOT_APPLICABLE = "not applicable: "

#: peak memory = BASELINE_BYTES + BYTES_PER_VOXEL x voxels of the selected series (measured by ``python -m bench``,
#: see docs/robustness.md); used for the memory guard's message and checked against resources.memory by the tests
BASELINE_BYTES = 1.5 * 2**30
BYTES_PER_VOXEL = 24


@dataclass(frozen=True)
class Verdict:
    """``applicable``: the analysis goes on; ``warnings``: one identifier-free line each (the reason first
    when not applicable)."""

    applicable: bool = True
    warnings: tuple[str, ...] = ()


def coverage_mm(volume: Volume) -> float:
    """Extent of the scanned grid along the patient's superior axis (LPS z), centre of first to last voxel, mm.

    ``volume`` is D-H-W with an affine (d, h, w, 1) -> LPS mm; all eight corner voxel centres are mapped, so
    any orientation of the grid gives its true superior-inferior extent.
    """
    corners = np.array([[d, h, w] for d in (0, volume.shape[0] - 1) for h in (0, volume.shape[1] - 1)
                        for w in (0, volume.shape[2] - 1)], float)
    z = volume.index_to_lps(corners)[:, 2]
    return float(z.max() - z.min())


def assess_coverage(coverage: float, analysis: AnalysisConfig) -> Verdict:
    """Not applicable when ``coverage`` (mm along the patient axis) is below ``analysis.min_coverage_mm``."""
    if coverage < analysis.min_coverage_mm:
        return Verdict(False, (f"{NOT_APPLICABLE}the scan covers {coverage:.0f} mm along the patient axis, "
                               f"less than the {analysis.min_coverage_mm:.0f} mm a pelvis needs",))
    return Verdict()


def size_refusal(rows: int, columns: int, slices: int, analysis: AnalysisConfig, memory: str) -> str | None:
    """The reason to refuse a series of ``rows x columns x slices`` voxels before decoding it, or None.

    ``memory`` is the package's memory request (resources.memory, e.g. ``8Gi``), named in the reason.
    """
    voxels = rows * columns * slices
    limit = analysis.max_voxels
    if limit is None or voxels <= limit:
        return None
    need = (BASELINE_BYTES + voxels * BYTES_PER_VOXEL) / 2**30
    return (f"series too large: {rows} x {columns} x {slices} = {voxels / 1e6:.1f} M voxels, "
            f"above the limit of {limit / 1e6:.1f} M (analysis.max_voxels; about {need:.1f} GiB "
            f"would be needed, the package requests {memory})")


def assess_hip_bones(left_ml: float, right_ml: float, faces: Sequence[str], analysis: AnalysisConfig) -> Verdict:
    """Plausibility of the two segmented hip bones (volumes in mL; ``faces``: grid faces they touch).

    Not applicable when a side is below ``min_hip_bone_volume_ml`` (no pelvis in the field of view) or when
    the larger volume exceeds ``max_hip_bone_volume_ratio`` times the smaller (an implausible segmentation);
    otherwise applicable, with a warning when the bone is cut by the scan edge.
    """
    min_ml, max_ratio = analysis.min_hip_bone_volume_ml, analysis.max_hip_bone_volume_ratio
    if left_ml < min_ml or right_ml < min_ml:
        missing = " and ".join(s for s, v in (("left", left_ml), ("right", right_ml)) if v < min_ml)
        return Verdict(False, (f"{NOT_APPLICABLE}no {missing} hip bone in the field of view "
                               f"(< {min_ml:g} mL segmented)",))
    if max(left_ml, right_ml) / min(left_ml, right_ml) > max_ratio:
        return Verdict(False, (f"{NOT_APPLICABLE}implausible hip-bone segmentation (left {left_ml:.0f} mL, "
                               f"right {right_ml:.0f} mL, ratio above {max_ratio:g})",))
    if faces:
        return Verdict(True, (f"hip bone cut by the edge of the scan ({', '.join(faces)}): the hip-frame "
                              "location is approximate",))
    return Verdict()


def tumour_present(tumour_ml: float, analysis: AnalysisConfig) -> bool:
    """True when a segmented tumour of ``tumour_ml`` mL counts as a tumour (at least ``min_tumour_volume_ml``)."""
    return tumour_ml >= analysis.min_tumour_volume_ml


def tumour_confident(mean_probability: float | None, min_mean_probability: float | None, *,
                     cut_by_edge: bool = False) -> bool:
    """True when a tumour whose voxels have mean foreground probability ``mean_probability`` (0-1;
    :func:`core.segment.mean_probability_in`) passes the tumour model's confidence rule ``min_mean_probability``
    (its metadata; None: no rule, every tumour passes). A tumour without a measured probability passes only
    without a rule.

    A tumour cut by the scan edge (``cut_by_edge``: it touches a face of the grid within the edge margin,
    :func:`tumour_edge_margins_mm`) always passes: the model sees only part of it, without the context beyond
    the edge, so its probability is low for a reason the rule was not chosen on, and the reader is warned of the
    cut instead (:func:`tumour_truncation_warning`). Models 0.6.4 applied the rule to such tumours and hid one.
    """
    if min_mean_probability is None or cut_by_edge:
        return True
    return mean_probability is not None and mean_probability >= min_mean_probability


def tumour_reported(tumour_ml: float, mean_probability: float | None, edge_faces: Sequence[str],
                    analysis: AnalysisConfig, min_mean_probability: float | None) -> bool:
    """True when a tumour candidate in the sacral region is reported: at least ``analysis.min_tumour_volume_ml``
    (:func:`tumour_present`) and confident (:func:`tumour_confident`; ``edge_faces``: the grid faces it touches,
    :func:`core.hip_frame.truncated_faces` with :func:`tumour_edge_margins_mm`). The application's rule, shared
    by training (classifier inputs cut from the tumour model's masks) and inference."""
    return tumour_present(tumour_ml, analysis) and tumour_confident(mean_probability, min_mean_probability,
                                                                    cut_by_edge=bool(edge_faces))


def low_confidence_warning(tumour_ml: float, mean_probability: float | None, min_mean_probability: float) -> str:
    """The warning for a tumour candidate in the sacral region not reported by :func:`tumour_confident`."""
    shown = "unmeasured" if mean_probability is None else f"{mean_probability:.2f}"
    return (f"a tumour candidate of {tumour_ml:.0f} mL in the sacral region was not reported: its mean probability "
            f"{shown} is below the tumour model's threshold {min_mean_probability:.2f}")


def rejected_candidates_warning(rejected_ml: Sequence[float], analysis: AnalysisConfig, *,
                                located: bool = True) -> str | None:
    """The warning about tumour candidates left out (volumes in mL), or None.

    ``located`` (:attr:`core.postprocess.Merged.located`): True when they lay outside the sacral region, False
    when no hip frame could be built to place them. Candidates below the tumour threshold would never be
    reported and are not mentioned.
    """
    shown = [v for v in rejected_ml if tumour_present(v, analysis)]
    if not shown:
        return None
    where = "outside the sacral region" if located else "that could not be placed without a hip frame"
    return f"{len(shown)} larger tumour candidate(s) {where} left out ({', '.join(f'{v:.0f}' for v in shown)} mL)"


def tumour_edge_margin_mm(analysis: AnalysisConfig, tumour_grid_mm: float | None) -> float:
    """The distance (mm) from a face of the scanned grid within which the tumour counts as cut by the scan edge.

    ``analysis.tumour_edge_margin_mm`` when configured; otherwise one voxel of the tumour model's grid
    (``tumour_grid_mm``, its metadata's largest ``spacing_mm``), closer than which a mask resampled from that
    grid cannot follow the edge. Raises ``ValueError`` when neither is known.
    """
    if analysis.tumour_edge_margin_mm is not None:
        return analysis.tumour_edge_margin_mm
    if tumour_grid_mm is None or not tumour_grid_mm > 0:
        raise ValueError("no tumour edge margin: analysis.tumour_edge_margin_mm is not set and the tumour model's "
                         f"grid spacing is unknown ({tumour_grid_mm!r})")
    return float(tumour_grid_mm)


def tumour_edge_margins_mm(analysis: AnalysisConfig, tumour_grid_mm: float | None,
                           series_spacing_dhw: Sequence[float]) -> tuple[float, float, float]:
    """Per axis (D-H-W, mm) the distance from a face within which the tumour counts as cut by the scan edge.

    ``analysis.tumour_edge_margin_mm`` on every axis when configured; otherwise one voxel of the coarser of the
    tumour model's grid and the series grid on that axis: a mask mapped back from the model grid onto a coarser
    series grid is quantised to the series voxels, so it can stop one series voxel short of the edge (models
    0.6.0 on 3.4 mm pixels). Raises ``ValueError`` as :func:`tumour_edge_margin_mm` does.
    """
    base = tumour_edge_margin_mm(analysis, tumour_grid_mm)
    if analysis.tumour_edge_margin_mm is not None:
        return (base, base, base)
    d, h, w = (max(base, float(s)) for s in series_spacing_dhw)
    return (d, h, w)


def tumour_truncation_warning(faces: Sequence[str]) -> str | None:
    """The warning for a tumour touching the grid ``faces`` (its volume and location are then too small)."""
    if not faces:
        return None
    return (f"sacral tumour touches the edge of the scan ({', '.join(faces)}): its volume and location "
            "may be underestimated")
