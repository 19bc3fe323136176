"""Choose the one CT series to analyse from a :class:`core.dicom_header.StudyScan`, by configurable rules.

Rules (``app.yaml`` ``series_selection:``, defaults :data:`core.dicom_header.DEFAULT_RULES`):

1. hard criteria, each failure is a rejection reason: modality (CT), SOP class (CT Image Storage, Enhanced CT,
   Legacy Converted Enhanced CT; a multi-frame series must be one object, see ``core.dicom_input``), ImageType
   contains ORIGINAL and PRIMARY and not LOCALIZER, orientation (axial within 10 degrees), slice thickness
   within [0.5, 6] mm, slice (frame) count within [20, 2000]; for multi-frame objects these are read from the
   first frame's functional groups;
2. contrast: with policy ``avoid`` a contrast-enhanced series (non-empty ContrastBolusAgent/Route/Ingredient
   other than "NONE"-like values) is used only when no noncontrast series qualifies, with the warning
   ``series is contrast-enhanced: outside the validated use``; ``reject`` never uses one; ``allow`` ignores it;
3. preferences among the remaining series, in order: kernel class (soft-tissue/standard before unknown before
   bone/sharp, configurable), slice thickness inside the preferred range, thinner, more slices, classic CT
   Image Storage before multi-frame; ties are broken by study UID, series number and key so that the choice
   never depends on file order. A classic and a multi-frame copy of the same acquisition (same study, frame
   of reference, image size, slice count, thickness, kernel and contrast) therefore give the classic copy;
   the other is named in ``rejected`` and the log as that copy.

Several studies in one input: the best qualifying series over all studies is taken and a warning says how
many other studies were ignored. Other modalities, non-image objects and non-DICOM files are ignored.
All reasons and warnings are single lines without identifiers (no UIDs, names, paths).
"""
from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from pydicom.uid import UID

from core.dicom_header import (
    CT_IMAGE_STORAGE, ENHANCED_CT_IMAGE_STORAGE, LEGACY_ENHANCED_CT_IMAGE_STORAGE, InputError, SeriesInfo, StudyScan,
    classify_orientation, is_contrast, merge_rules,
)

CONTRAST_WARNING = "series is contrast-enhanced: outside the validated use"
MULTIFRAME_SOP_CLASSES = (ENHANCED_CT_IMAGE_STORAGE, LEGACY_ENHANCED_CT_IMAGE_STORAGE)

log = logging.getLogger(__name__)


@dataclass
class Selection:
    """Result of :func:`select_series`.

    ``series`` is None when nothing qualifies, and ``reason`` then says why in one line; otherwise ``reason``
    summarises the choice. ``rejected`` maps every other series key (SeriesInstanceUID) to why it was not used.
    """

    series: SeriesInfo | None
    reason: str
    warnings: list[str] = field(default_factory=list)
    rejected: dict[str, str] = field(default_factory=dict)

    def require(self) -> SeriesInfo:
        """The selected series, or :class:`InputError` (code ``no_series``) with :attr:`reason`."""
        if self.series is None:
            raise InputError("no_series", self.reason)
        return self.series


def _g(x: float) -> str:
    return f"{x:g}"


def kernel_class(kernel: str, rules: dict[str, Any]) -> str:
    """'sharp' | 'soft' | 'unknown' for a ConvolutionKernel value (first value), by the rules' patterns."""
    k = (kernel or "").split("\\")[0].strip()
    if not k:
        return "unknown"
    for pat in rules["kernel"]["sharp_patterns"]:
        if re.search(pat, k, re.IGNORECASE):
            return "sharp"
    for pat in rules["kernel"]["soft_patterns"]:
        if re.search(pat, k, re.IGNORECASE):
            return "soft"
    return "unknown"


def _contrast(s: SeriesInfo, rules: dict[str, Any]) -> bool:
    return is_contrast(s.contrast_values, rules["contrast"]["negative_values"])


def _rejections(s: SeriesInfo, rules: dict[str, Any]) -> list[str]:
    """Reasons why a series of an accepted modality fails the hard criteria (empty: it qualifies)."""
    out: list[str] = []
    allowed_sop = rules["sop_class_uids"]
    if s.sop_class_uid in MULTIFRAME_SOP_CLASSES and s.sop_class_uid not in allowed_sop:
        out.append("Enhanced (multi-frame) CT not accepted by the configuration (series_selection.sop_class_uids)")
    elif s.sop_class_uid not in allowed_sop:
        name = UID(s.sop_class_uid).name if s.sop_class_uid else "none"
        out.append(f"SOP class {name} not accepted")
    elif s.multiframe and s.n_files > 1:
        out.append(f"multi-frame series split over {s.n_files} objects (concatenation) not supported")
    it = set(s.image_type)
    forbidden = [x for x in rules["image_type_forbidden"] if x.upper() in it]
    if "LOCALIZER" in forbidden:
        out.append("localizer")
        forbidden.remove("LOCALIZER")
    if forbidden:
        out.append(f"ImageType contains {'/'.join(forbidden)}")
    missing = [x for x in rules["image_type_required"] if x.upper() not in it]
    if missing:
        out.append(f"ImageType {'/'.join(s.image_type) or 'absent'} lacks {'/'.join(missing)}")
    want = str(rules["orientation"]).lower()
    if want != "any":
        ori = classify_orientation(s.header.get("ImageOrientationPatient"), float(rules["orientation_tolerance_deg"]))
        if ori != want:
            out.append(f"orientation {ori} ({want} required)")
    lo, hi = rules["slice_thickness_mm"]
    t = s.slice_thickness_mm
    if t is not None and t > hi:
        out.append(f"slice thickness {_g(t)} mm > {_g(hi)} mm")
    elif t is not None and t < lo:
        out.append(f"slice thickness {_g(t)} mm < {_g(lo)} mm")
    lo_n, hi_n = rules["slice_count"]
    if s.n_slices < lo_n:
        out.append(f"{s.n_slices} slices < {lo_n}")
    elif s.n_slices > hi_n:
        out.append(f"{s.n_slices} slices > {hi_n}")
    if rules["contrast"]["policy"] == "reject" and _contrast(s, rules):
        out.append("contrast-enhanced")
    return out


def _rank_key(s: SeriesInfo, rules: dict[str, Any]) -> tuple[Any, ...]:
    kc = kernel_class(s.convolution_kernel, rules)
    prefer = rules["kernel"]["prefer"]
    order = {"soft": {"soft": 0, "unknown": 1, "sharp": 2}, "sharp": {"sharp": 0, "unknown": 1, "soft": 2}}
    k_rank = order.get(prefer, {}).get(kc, 0)
    lo, hi = rules["preferred_slice_thickness_mm"]
    t = s.slice_thickness_mm
    in_range = 0 if t is not None and lo <= t <= hi else 1
    return (k_rank, in_range, t if t is not None else float("inf"), -s.n_slices, int(s.multiframe),
            s.study_instance_uid, s.series_number if s.series_number is not None else 1 << 30, s.key)


def _form(s: SeriesInfo) -> str:
    return "Enhanced (multi-frame) CT" if s.multiframe else "classic CT Image Storage"


def same_acquisition(a: SeriesInfo, b: SeriesInfo, rules: dict[str, Any]) -> bool:
    """True when two series look like one acquisition stored twice, once classic and once multi-frame: same
    study and frame of reference (both present), image size, slice count, thickness, kernel and contrast
    (headers only; e.g. a Legacy Converted Enhanced CT made from the classic series)."""
    def key(s: SeriesInfo) -> tuple[Any, ...]:
        return (s.study_instance_uid, str(s.header.get("FrameOfReferenceUID") or "").strip(),
                str(s.header.get("Rows")), str(s.header.get("Columns")), s.n_slices, s.slice_thickness_mm,
                s.convolution_kernel.strip().upper(), _contrast(s, rules))
    ka, kb = key(a), key(b)
    return a.multiframe != b.multiframe and bool(ka[1]) and ka == kb


def _plural(n: int, word: str, plural: str | None = None) -> str:
    return f"{n} {word if n == 1 else (plural or word + 's')}"


def select_series(scan: StudyScan, rules: Mapping[str, Any] | None = None) -> Selection:
    """Pick the series to analyse from ``scan`` according to ``rules`` (partial dicts are merged over defaults)."""
    rules = merge_rules(rules)
    if rules["multiple_studies"] != "best_overall":
        raise ValueError("series_selection.multiple_studies: only 'best_overall' is implemented")
    if rules["contrast"]["policy"] not in ("avoid", "reject", "allow"):
        raise ValueError("series_selection.contrast.policy must be avoid, reject or allow")
    modalities = {m.upper() for m in rules["modalities"]}
    rejected: dict[str, str] = {}
    warnings: list[str] = []
    other_modalities: Counter[str] = Counter()
    failing: list[list[str]] = []
    qualifying: list[SeriesInfo] = []
    for s in scan.series:
        if s.modality not in modalities:
            other_modalities[s.modality or "unknown"] += 1
            rejected[s.key] = f"modality {s.modality or 'unknown'}"
            continue
        why = _rejections(s, rules)
        if why:
            rejected[s.key] = "; ".join(why)
            failing.append(why)
        else:
            qualifying.append(s)
    if scan.unreadable:
        warnings.append(f"{_plural(len(scan.unreadable), 'unreadable DICOM file')} ignored")
    if any(not s.series_instance_uid for s in scan.series if s.modality in modalities):
        warnings.append("series without SeriesInstanceUID grouped by frame of reference, number and description")

    want = "/".join(sorted(modalities))
    if not scan.series:
        extra = f" ({_plural(len(scan.unreadable), 'unreadable DICOM file')})" if scan.unreadable else ""
        return Selection(None, f"no DICOM series found{extra}", warnings, rejected)
    if not failing and not qualifying:
        found = ", ".join(f"{m} x{n}" for m, n in sorted(other_modalities.items()))
        return Selection(None, f"no {want} series: found {found}", warnings, rejected)
    if not qualifying:
        reasons: list[str] = []  # the first (most telling) reason of each series; all are in `rejected`
        for why in failing:
            if why[0] not in reasons:
                reasons.append(why[0])
        return Selection(None, f"no qualifying series: {_plural(len(failing), want + ' series', want + ' series')} "
                         f"rejected ({'; '.join(reasons)})", warnings, rejected)

    candidates = qualifying
    if rules["contrast"]["policy"] == "avoid":
        plain = [s for s in qualifying if not _contrast(s, rules)]
        if plain:
            for s in qualifying:
                if _contrast(s, rules):
                    rejected[s.key] = "contrast-enhanced; a noncontrast series qualifies"
            candidates = plain
    ranked = sorted(candidates, key=lambda s: _rank_key(s, rules))
    best = ranked[0]
    copies = 0
    for s in ranked[1:]:
        if same_acquisition(s, best, rules):
            copies += 1
            rejected[s.key] = (f"same acquisition as the selected series, stored as {_form(s)}: "
                               f"the {_form(best)} copy is used")
            log.info("series selection: %s", rejected[s.key])
        else:
            rejected[s.key] = "qualifies; ranked below the selected series"
    contrast = _contrast(best, rules)
    # the series handed on carries the contrast decision made here (configured "no contrast" values), which
    # load_volume records in the volume's metadata
    best = replace(best, contrast=contrast)
    if contrast and rules["contrast"]["policy"] != "allow":
        warnings.append(CONTRAST_WARNING)
    others = {s.study_instance_uid for s in scan.series} - {best.study_instance_uid}
    if others:
        warnings.append(f"{_plural(len(others), 'other study', 'other studies')} in the input ignored")
    thk = f"{_g(best.slice_thickness_mm)} mm" if best.slice_thickness_mm is not None else "unknown thickness"
    reason = (f"selected {best.modality} series: {best.n_slices} slices, {thk}, "
              f"{kernel_class(best.convolution_kernel, rules)} kernel, "
              f"{'contrast-enhanced' if contrast else 'noncontrast'} "
              f"({_plural(len(qualifying), 'qualifying series', 'qualifying series')})")
    if best.multiframe:
        reason += "; multi-frame object"
    if copies:
        reason += f"; {_plural(copies, 'copy', 'copies')} of the same acquisition in another form not used"
    log.info("series selection: %s", reason)
    return Selection(best, reason, warnings, rejected)


__all__ = ["CONTRAST_WARNING", "CT_IMAGE_STORAGE", "Selection", "kernel_class", "same_acquisition", "select_series"]
