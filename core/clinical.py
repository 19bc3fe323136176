"""Clinical (tabular) classifier inputs and their standardisation, shared by training and inference.

Values: ``sex`` ('M'/'F', encoded M=1, F=0), ``age_years`` (years, from the DICOM header),
``tumour_volume_ml`` (mL, from the tumour mask) and ``loc_u``, ``loc_v``, ``loc_w`` (dimensionless
hip-frame location, see :mod:`core.hip_frame`). The classifier's ``metadata.json`` carries the feature
spec actually used: its ``features`` (:class:`core.model_metadata.FeatureSpec`: name, mean, std, impute,
encoding) in input order; ``mean``, ``std`` and ``impute`` are in raw units (after encoding). Nothing here logs
or returns identifying header values.
"""
from __future__ import annotations

import datetime as _dt
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from core.model_metadata import FeatureSpec

__all__ = ["FEATURE_ORDER", "SEX_ENCODING", "age_years", "sex", "tumour_volume_ml", "standardise",
           "fit_feature_spec"]

FEATURE_ORDER: tuple[str, ...] = ("sex", "age_years", "tumour_volume_ml", "loc_u", "loc_v", "loc_w")
SEX_ENCODING = "M=1,F=0"
MAX_AGE_YEARS = 130.0

_AGE_RE = re.compile(r"^(\d{1,3})([DWMY])$")
_AGE_UNIT_YEARS = {"Y": 1.0, "M": 1.0 / 12.0, "W": 7.0 / 365.25, "D": 1.0 / 365.25}


def _get(ds: Any, keyword: str) -> Any:
    """Header value or None; never raises (malformed elements read as None)."""
    try:
        value = ds.get(keyword, None)
    except Exception:  # noqa: BLE001 - a malformed element must not stop the pipeline
        return None
    return None if value is None else getattr(value, "value", value)


def _parse_date(value: Any) -> _dt.date | None:
    """DICOM DA ('YYYYMMDD', legacy 'YYYY.MM.DD') or a date object -> date; else None."""
    if isinstance(value, _dt.datetime):
        return value.date()
    if isinstance(value, _dt.date):
        return value
    if not isinstance(value, str):
        return None
    s = value.strip().replace(".", "")
    if len(s) != 8 or not s.isdigit():
        return None
    try:
        return _dt.date(int(s[:4]), int(s[4:6]), int(s[6:]))
    except ValueError:
        return None


def _anniversary(birth: _dt.date, year: int) -> _dt.date:
    try:
        return birth.replace(year=year)
    except ValueError:  # 29 Feb in a non-leap year
        return _dt.date(year, 2, 28)


def _years_between(birth: _dt.date, when: _dt.date) -> float:
    """Calendar age in years: completed years + fraction of the current birthday-year."""
    years = when.year - birth.year - ((when.month, when.day) < (birth.month, birth.day))
    last, nxt = _anniversary(birth, birth.year + years), _anniversary(birth, birth.year + years + 1)
    return years + (when - last).days / (nxt - last).days


def _valid_age(age: float) -> float | None:
    return age if 0.0 <= age <= MAX_AGE_YEARS else None


def age_years(ds: Any) -> float | None:
    """Patient age in years at the study, or None.

    Sources, first valid one wins: PatientAge (AS 'nnnY', 'nnnM', 'nnnW', 'nnnD'; converted with
    1 M = 1/12 y, 1 W = 7/365.25 y, 1 D = 1/365.25 y); else PatientBirthDate with StudyDate, else
    AcquisitionDate, else SeriesDate (calendar age, e.g. 1970-06-15 -> 2026-06-14 = 55.997).
    Malformed, missing or implausible (< 0 or > 130 y) values are skipped; never raises.
    '000Y' is skipped too: it is a common anonymisation placeholder (pydicom's CT_small.dcm has it),
    and infants' ages are written in D, W or M.
    """
    try:
        raw = _get(ds, "PatientAge")
        if isinstance(raw, str):
            m = _AGE_RE.match(raw.strip().upper())
            if m and m.group(0) != "000Y":
                age = _valid_age(int(m.group(1)) * _AGE_UNIT_YEARS[m.group(2)])
                if age is not None:
                    return age
        birth = _parse_date(_get(ds, "PatientBirthDate"))
        if birth is None:
            return None
        for keyword in ("StudyDate", "AcquisitionDate", "SeriesDate"):
            when = _parse_date(_get(ds, keyword))
            if when is not None:
                return _valid_age(_years_between(birth, when))
        return None
    except Exception:  # noqa: BLE001 - documented: never raises
        return None


def sex(ds: Any) -> str | None:
    """PatientSex as 'M' or 'F'; 'O', empty, missing or malformed -> None. Never raises."""
    try:
        raw = _get(ds, "PatientSex")
        value = raw.strip().upper() if isinstance(raw, str) else None
        return value if value in ("M", "F") else None
    except Exception:  # noqa: BLE001
        return None


def tumour_volume_ml(mask: np.ndarray, voxel_volume_ml: float) -> float:
    """Tumour volume in mL.

    Args:
        mask: D-H-W bool (or 0/1 integer) tumour mask; for a label map pass ``labels == 3``.
        voxel_volume_ml: volume of one voxel in mL (``Volume.voxel_volume_ml``).
    """
    mask = np.asarray(mask)
    if not (math.isfinite(voxel_volume_ml) and voxel_volume_ml > 0):
        raise ValueError(f"voxel_volume_ml must be finite and > 0, got {voxel_volume_ml}")
    if mask.dtype != bool:
        if not np.issubdtype(mask.dtype, np.integer):
            raise ValueError(f"mask must be bool or integer 0/1, got dtype {mask.dtype}")
        if mask.size and (mask.min() < 0 or mask.max() > 1):
            raise ValueError("integer mask must contain only 0 and 1 (pass labels == tumour_value)")
    return float(np.count_nonzero(mask)) * float(voxel_volume_ml)


def _parse_encoding(encoding: str) -> dict[str, float]:
    """'M=1,F=0' -> {'M': 1.0, 'F': 0.0}."""
    out = {}
    for part in encoding.split(","):
        key, sep, val = part.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"malformed encoding {encoding!r} (expected e.g. 'M=1,F=0')")
        out[key.strip()] = float(val)
    return out


def _encode(name: str, value: Any, encoding: str | None) -> float | None:
    """Raw value -> float, or None when missing (None, NaN)."""
    if value is None:
        return None
    if isinstance(value, str):
        table = _parse_encoding(encoding) if encoding else {}
        if value not in table:
            raise ValueError(f"feature {name!r}: value {value!r} not in encoding {encoding!r}")
        return table[value]
    x = float(value)
    return None if math.isnan(x) else x


def standardise(values: Mapping[str, Any], feature_spec: Sequence[FeatureSpec]) -> tuple[np.ndarray, list[str]]:
    """z-score the features in the order of ``feature_spec`` (from the model's metadata.json).

    Args:
        values: name -> raw value (units as in the module docstring); a str is encoded with the
            feature's ``encoding`` (sex: 'M'/'F'); None, NaN or an absent name = missing.
            Names not in the spec are ignored.
        feature_spec: the classifier's features (mean and std checked when the spec was built); a missing
            value is replaced by ``impute`` (raw units, e.g. the training mean) before z-scoring.

    Returns:
        (float32 array of ``(x - mean) / std`` in spec order, names that were imputed).

    Raises:
        ValueError: unknown encoded string, or a missing value without ``impute``.
    """
    out = np.empty(len(feature_spec), dtype=np.float32)
    imputed: list[str] = []
    for i, spec in enumerate(feature_spec):
        x = _encode(spec.name, values.get(spec.name), spec.encoding)
        if x is None:
            if spec.impute is None:
                raise ValueError(f"feature {spec.name!r} is missing and the spec has no 'impute' value")
            x = spec.impute
            imputed.append(spec.name)
        out[i] = (x - spec.mean) / spec.std
    return out, imputed


def fit_feature_spec(table: Mapping[str, Sequence[Any]], names: Sequence[str] = FEATURE_ORDER,
                     std_floor: float = 1e-6) -> tuple[FeatureSpec, ...]:
    """Feature spec for metadata.json from the training split.

    Args:
        table: name -> per-patient raw values (None/NaN = missing; sex as 'M'/'F' or 1/0).
        names: features, in classifier input order.
        std_floor: a population std (ddof=0) below this is replaced by 1.0 (as scikit-learn's
            StandardScaler does): a constant feature then maps to 0 instead of blowing up to
            +-1e6 at inference.

    Returns:
        one :class:`FeatureSpec` per name: mean, std, impute (= mean), n (values used), encoding (sex only).
    """
    spec: list[FeatureSpec] = []
    for name in names:
        if name not in table:
            raise ValueError(f"feature {name!r} not in the training table")
        encoding = SEX_ENCODING if name == "sex" else None
        xs = [x for x in (_encode(name, v, encoding) for v in table[name]) if x is not None]
        if not xs:
            raise ValueError(f"feature {name!r} has no non-missing value")
        arr = np.asarray(xs, dtype=np.float64)
        mean, std = float(arr.mean()), float(arr.std())
        spec.append(FeatureSpec(name=name, mean=mean, std=std if std >= std_floor else 1.0, impute=mean, n=len(xs),
                                encoding=encoding))
    return tuple(spec)
