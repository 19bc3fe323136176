"""The validation manifest: one CSV row per study (format in docs/validation.md).

Required columns: ``case_id`` (unique; letters, digits, ``.``, ``_``, ``-``: it names the run folder) and
``dicom_dir``. For metrics: ``tumour_class`` (one of the six classes, any spelling accepted by
``core.codes.tumour_class_key``, or ``none``; empty = no reference: the study is run and listed, not scored).
Optional: ``label_path`` (reference label map NIfTI on the DICOM grid), ``reader_<name>`` (a reader's class,
or ``none``; empty = not read), and subgroup columns (any; ``age`` is also banded into ``age_band``).
Relative paths are relative to the manifest's folder.
"""
from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.codes import tumour_class_key
from core.status import Status

NONE = "none"
READER_PREFIX = "reader_"
#: subgroup columns used by default when present in the manifest (``age_band`` is derived from ``age``)
DEFAULT_SUBGROUPS: tuple[str, ...] = ("sex", "age_band", "site", "manufacturer", "slice_thickness_mm")
#: age bands in years: lower bound inclusive
AGE_BANDS: tuple[tuple[str, float, float], ...] = (("<40", 0, 40), ("40-59", 40, 60), (">=60", 60, 1e9))
_CASE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class ManifestError(ValueError):
    """The manifest cannot be used (missing column, duplicate or unsafe case_id, unknown class...)."""


@dataclass(frozen=True)
class Case:
    """One study of the manifest. ``truth`` is a canonical class key, ``'none'`` or None (no reference)."""

    case_id: str
    dicom_dir: Path
    truth: str | None
    label_path: Path | None
    readers: dict[str, str | None] = field(default_factory=dict)   # reader name -> class key / 'none' / None
    subgroups: dict[str, str] = field(default_factory=dict)         # column -> value ('' = missing)

    def to_dict(self) -> dict[str, Any]:
        return {"case_id": self.case_id, "dicom_dir": str(self.dicom_dir), "truth": self.truth,
                "label_path": str(self.label_path) if self.label_path else None,
                "readers": dict(self.readers), "subgroups": dict(self.subgroups)}


def canonical_class(value: str | None, where: str) -> str | None:
    """Class key of a manifest cell: a canonical tumour class, ``'none'``, or None for an empty cell."""
    v = (value or "").strip()
    if not v:
        return None
    if v.lower() in (NONE, Status.NO_TUMOUR, "no tumour", "no_tumor"):
        return NONE
    try:
        return tumour_class_key(v)
    except ValueError as e:
        raise ManifestError(f"{where}: {e}") from None


def age_band(value: str | None) -> str:
    """Age band label of an age in years ('' if missing or not a number)."""
    try:
        age = float(str(value).strip())
    except (TypeError, ValueError):
        return ""
    for name, lo, hi in AGE_BANDS:
        if lo <= age < hi:
            return name
    return ""


def _norm_value(v: str) -> str:
    v = (v or "").strip()
    try:  # '3.0' and '3' are one subgroup
        f = float(v)
        return f"{f:g}"
    except ValueError:
        return v


def read_manifest(path: Path | str, subgroup_columns: list[str] | None = None) -> tuple[list[Case], list[str]]:
    """Read and check a manifest. Returns (cases in file order, subgroup columns used).

    ``subgroup_columns``: explicit list (``age_band`` allowed when ``age`` is present); default: those of
    :data:`DEFAULT_SUBGROUPS` present.
    """
    path = Path(path)
    base = path.resolve().parent
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        columns = [c.strip() for c in (reader.fieldnames or [])]
        rows = [{(k or "").strip(): (v or "") for k, v in row.items()} for row in reader]
    for required in ("case_id", "dicom_dir"):
        if required not in columns:
            raise ManifestError(f"{path.name}: required column {required!r} is missing (columns: {columns})")
    available = set(columns) | ({"age_band"} if "age" in columns else set())
    if subgroup_columns is None:
        groups = [c for c in DEFAULT_SUBGROUPS if c in available]
    else:
        missing = [c for c in subgroup_columns if c not in available]
        if missing:
            raise ManifestError(f"{path.name}: subgroup columns {missing} are not in the manifest")
        groups = list(subgroup_columns)
    readers = [c for c in columns if c.startswith(READER_PREFIX) and len(c) > len(READER_PREFIX)]
    cases, seen = [], set()
    for i, row in enumerate(rows, start=2):
        where = f"{path.name} line {i}"
        cid = row["case_id"].strip()
        if not _CASE_ID.match(cid):
            raise ManifestError(f"{where}: case_id {cid!r} must be 1-128 letters, digits, '.', '_' or '-'")
        if cid in seen:
            raise ManifestError(f"{where}: duplicate case_id {cid!r}")
        seen.add(cid)
        if not row["dicom_dir"].strip():
            raise ManifestError(f"{where}: empty dicom_dir")
        label = row.get("label_path", "").strip()
        sub = {}
        for c in groups:
            derived = c == "age_band" and "age_band" not in columns
            sub[c] = age_band(row.get("age")) if derived else _norm_value(row.get(c, ""))
        cases.append(Case(
            case_id=cid,
            dicom_dir=(base / row["dicom_dir"].strip()).resolve(),
            truth=canonical_class(row.get("tumour_class"), where),
            label_path=(base / label).resolve() if label else None,
            readers={r[len(READER_PREFIX):]: canonical_class(row.get(r), f"{where} {r}") for r in readers},
            subgroups=sub,
        ))
    if not cases:
        raise ManifestError(f"{path.name}: no studies")
    return cases, groups
