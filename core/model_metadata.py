"""A model's ``metadata.json`` as a frozen, typed value: the one reader and the one writer of that file's content.

Training builds a :class:`ModelMetadata` and writes it only through ``core.models.write_model``
(:meth:`ModelMetadata.to_dict`); the application, validation and the benchmarks read it only through
``core.models.read_metadata`` (:meth:`ModelMetadata.from_dict`). Every value is checked at that boundary: a bad
one raises :class:`MetadataError` (a :class:`ModelError`, so the application ends with exit code 3, and a
``ValueError``) whose message starts with the offending key (``spacing_mm``, ``labels[1].value``,
``features[0].std``).

Conventions, as in the rest of the project: arrays and grids are D-H-W (slices, rows, columns) in the canonical
LPS orientation (SimpleITK ``DICOMOrient('LPS')``); spacings and distances in millimetres; intensities in HU;
volumes in mL; hip-frame coordinates ``(u, v, w)`` dimensionless (:mod:`core.hip_frame`).

The JSON layout is flat (the keys of the shipped files): the common keys, then the segmentation keys
(:class:`SegmentationSpec`, task ``segmentation``) or the classification keys (:class:`ClassificationSpec`,
task ``classification``). Keys this module does not know are kept in ``extra`` (at the top level and in each
nested object) and written back unchanged, so that files of older and newer versions stay readable and
``ModelMetadata.from_dict(d).to_dict() == d`` for every file this version writes. Free-form records that
nothing computes on (``architecture``, ``training``, ``internal_validation``) stay mappings.
"""
from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

if TYPE_CHECKING:  # core.hip_frame needs SimpleITK; this module must not (bench/gpu_check.py runs without it)
    from core.hip_frame import FrameRegion

MODEL_FILE = "model.ts"
TASKS = ("segmentation", "classification")
#: the ``orientation`` statement of segmentation models (the only orientation the code implements)
CANONICAL_ORIENTATION = "canonical LPS (SimpleITK DICOMOrient 'LPS'), arrays D-H-W"
#: the ``coordinates`` statement of a ``sacral_region``
FRAME_COORDINATES = "normalised hip frame (u, v, w), core/hip_frame.py"
_T = TypeVar("_T")


class ModelError(Exception):
    """A model folder is missing, inconsistent with its metadata, or fails its checksum."""


class MetadataError(ModelError, ValueError):
    """A metadata value is missing or invalid; ``key`` is its path (``labels[1].category.value``)."""

    def __init__(self, key: str, reason: str) -> None:
        self.key, self.reason = key, reason
        super().__init__(f"{key}: {reason}")

    def within(self, prefix: str) -> MetadataError:
        """The same error with its key prefixed by ``prefix`` (the enclosing object's key)."""
        return MetadataError(f"{prefix}.{self.key}" if prefix else self.key, self.reason)


# ---------------------------------------------------------------------------------------------- value checks
def _at(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def _require(d: Mapping[str, Any], key: str, prefix: str = "") -> Any:
    if key not in d:
        raise MetadataError(_at(prefix, key), "missing")
    return d[key]


def _mapping(v: Any, key: str) -> Mapping[str, Any]:
    if not isinstance(v, Mapping):
        raise MetadataError(key, f"must be a JSON object, got {type(v).__name__}")
    return v


def _str(v: Any, key: str, *, empty: bool = False) -> str:
    if not isinstance(v, str) or (not empty and not v):
        raise MetadataError(key, f"must be a{'' if empty else ' non-empty'} string, got {v!r}")
    return v


def _opt_str(d: Mapping[str, Any], key: str, prefix: str = "") -> str | None:
    return None if key not in d else _str(d[key], _at(prefix, key), empty=True)


def _bool(v: Any, key: str) -> bool:
    if not isinstance(v, bool):
        raise MetadataError(key, f"must be true or false, got {v!r}")
    return v


def _float(v: Any, key: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise MetadataError(key, f"must be a finite number, got {v!r}")
    return float(v)


def _int(v: Any, key: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise MetadataError(key, f"must be an integer, got {v!r}")
    return v


def _seq(v: Any, key: str) -> Sequence[Any]:
    if isinstance(v, (str, bytes)) or not isinstance(v, Sequence):
        raise MetadataError(key, f"must be a list, got {type(v).__name__}")
    return v


def _triple_float(v: Any, key: str) -> tuple[float, float, float]:
    s = _seq(v, key)
    if len(s) != 3:
        raise MetadataError(key, f"must have 3 entries (D-H-W or u-v-w), got {len(s)}")
    return (_float(s[0], f"{key}[0]"), _float(s[1], f"{key}[1]"), _float(s[2], f"{key}[2]"))


def _triple_int(v: Any, key: str) -> tuple[int, int, int]:
    s = _seq(v, key)
    if len(s) != 3:
        raise MetadataError(key, f"must have 3 entries (D-H-W voxels), got {len(s)}")
    out = (_int(s[0], f"{key}[0]"), _int(s[1], f"{key}[1]"), _int(s[2], f"{key}[2]"))
    if min(out) < 1:
        raise MetadataError(key, f"must be positive, got {list(out)}")
    return out


def _opt_record(d: Mapping[str, Any], key: str, prefix: str = "") -> Mapping[str, Any] | None:
    """A free-form JSON object (copied), or None when absent."""
    return None if key not in d else copy.deepcopy(dict(_mapping(d[key], _at(prefix, key))))


def _extra(d: Mapping[str, Any], known: Sequence[str]) -> dict[str, Any]:
    return {k: copy.deepcopy(v) for k, v in d.items() if k not in known}


def _put(out: dict[str, Any], key: str, value: Any) -> None:
    """Write ``value`` under ``key`` unless it is None (an absent optional key stays absent)."""
    if value is not None:
        out[key] = copy.deepcopy(dict(value)) if isinstance(value, Mapping) else value


def _build(prefix: str, cls: type[_T], **kwargs: Any) -> _T:
    """``cls(**kwargs)`` (values already parsed), prefixing the key of a :class:`MetadataError` that its checks
    raise with ``prefix``, the key of the object being built."""
    try:
        return cls(**kwargs)
    except MetadataError as e:
        raise e.within(prefix) from None


# ---------------------------------------------------------------------------------------------- small parts
@dataclass(frozen=True)
class CodedValue:
    """A coded concept as the metadata stores it: coding scheme designator (``SCT``), code value, code meaning."""

    scheme: str
    value: str
    meaning: str

    def __post_init__(self) -> None:
        for k in ("scheme", "value", "meaning"):
            _str(getattr(self, k), k)

    @classmethod
    def from_dict(cls, d: Any, key: str) -> CodedValue:
        m = _mapping(d, key)
        return cls(*(_str(_require(m, k, key), _at(key, k)) for k in ("scheme", "value", "meaning")))

    def to_dict(self) -> dict[str, Any]:
        return {"scheme": self.scheme, "value": self.value, "meaning": self.meaning}


@dataclass(frozen=True)
class IntensityWindow:
    """Clip CT values to [``a_min``, ``a_max``] (HU) and map them linearly to [``b_min``, ``b_max``]
    (MONAI ScaleIntensityRange; ``core.segment.scale_intensity``)."""

    a_min: float
    a_max: float
    b_min: float = 0.0
    b_max: float = 1.0
    clip: bool = True
    extra: Mapping[str, Any] = field(default_factory=dict)

    KEYS: ClassVar[tuple[str, ...]] = ("a_min", "a_max", "b_min", "b_max", "clip")

    def __post_init__(self) -> None:
        if not self.a_max > self.a_min:
            raise MetadataError("a_max", f"must exceed a_min ({self.a_min} HU), got {self.a_max} HU")

    @classmethod
    def from_dict(cls, d: Any, key: str) -> IntensityWindow:
        m = _mapping(d, key)
        return _build(
            key, cls,
            a_min=_float(_require(m, "a_min", key), _at(key, "a_min")),
            a_max=_float(_require(m, "a_max", key), _at(key, "a_max")),
            b_min=_float(m.get("b_min", 0.0), _at(key, "b_min")), b_max=_float(m.get("b_max", 1.0), _at(key, "b_max")),
            clip=_bool(m.get("clip", True), _at(key, "clip")), extra=_extra(m, cls.KEYS))

    def to_dict(self) -> dict[str, Any]:
        return {"a_min": self.a_min, "a_max": self.a_max, "b_min": self.b_min, "b_max": self.b_max,
                "clip": self.clip, **copy.deepcopy(dict(self.extra))}


@dataclass(frozen=True)
class SlidingWindow:
    """MONAI sliding-window inference: ``roi_size`` (D-H-W voxels on the model grid, also the training patch),
    ``overlap`` (fraction of the ROI, [0, 1)), ``sw_batch_size`` (ROIs per forward pass) and the blending
    ``mode`` (``gaussian`` or ``constant``). ``cpu_precision``: ``fp32``, or ``bf16`` for bfloat16 autocast on a
    CPU with native bfloat16 arithmetic (float32 on any other CPU; :func:`core.inference.autocast_dtype`), the
    setting this model version was validated with (on CUDA: float16 autocast either way). ``flip_average``:
    test-time flips whose probabilities are averaged with the unflipped pass (:data:`FLIP_AXES` names them; the
    only one, ``left_right``, mirrors the canonical LPS grid's W axis, the patient's left-right), empty for none;
    each costs one more sliding window."""

    roi_size: tuple[int, int, int]
    overlap: float = 0.25
    sw_batch_size: int = 1
    mode: str = "gaussian"
    cpu_precision: str = "fp32"
    flip_average: tuple[str, ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)

    KEYS: ClassVar[tuple[str, ...]] = ("roi_size", "overlap", "sw_batch_size", "mode", "cpu_precision",
                                       "flip_average")
    CPU_PRECISIONS: ClassVar[tuple[str, ...]] = ("fp32", "bf16")
    #: test-time flip name -> axis of the model input (C, D, H, W) it mirrors: W, patient left-right
    FLIP_AXES: ClassVar[Mapping[str, int]] = {"left_right": 3}

    def __post_init__(self) -> None:
        if not 0.0 <= self.overlap < 1.0:
            raise MetadataError("overlap", f"must be in [0, 1), got {self.overlap}")
        if self.sw_batch_size < 1:
            raise MetadataError("sw_batch_size", f"must be >= 1, got {self.sw_batch_size}")
        if self.mode not in ("gaussian", "constant"):
            raise MetadataError("mode", f"must be 'gaussian' or 'constant', got {self.mode!r}")
        if self.cpu_precision not in self.CPU_PRECISIONS:
            raise MetadataError("cpu_precision", f"must be one of {self.CPU_PRECISIONS}, got {self.cpu_precision!r}")
        check_flips(self.flip_average, "flip_average")

    @classmethod
    def from_dict(cls, d: Any, key: str) -> SlidingWindow:
        m = _mapping(d, key)
        return _build(
            key, cls,
            roi_size=_triple_int(_require(m, "roi_size", key), _at(key, "roi_size")),
            overlap=_float(m.get("overlap", 0.25), _at(key, "overlap")),
            sw_batch_size=_int(m.get("sw_batch_size", 1), _at(key, "sw_batch_size")),
            mode=_str(m.get("mode", "gaussian"), _at(key, "mode")),
            cpu_precision=_str(m.get("cpu_precision", "fp32"), _at(key, "cpu_precision")),
            flip_average=tuple(_str(f, _at(key, "flip_average")) for f in _seq(m.get("flip_average", []),
                                                                                 _at(key, "flip_average"))),
            extra=_extra(m, cls.KEYS))

    def to_dict(self) -> dict[str, Any]:
        out = {"roi_size": list(self.roi_size), "overlap": self.overlap, "sw_batch_size": self.sw_batch_size,
               "mode": self.mode}
        if self.cpu_precision != "fp32":  # written when not the default (metadata before 0.6.0 has none)
            out["cpu_precision"] = self.cpu_precision
        if self.flip_average:  # written when set (metadata before tumour model 0.6.1 has none)
            out["flip_average"] = list(self.flip_average)
        return {**out, **copy.deepcopy(dict(self.extra))}


def check_flips(flips: Sequence[str], key: str, labels: Sequence[SegmentLabel] = ()) -> None:
    """Raise :class:`MetadataError` (at ``key``) unless ``flips`` are distinct names of
    :data:`SlidingWindow.FLIP_AXES` and, with ``labels``, a ``left_right`` mirror would not swap a label that has
    a laterality. The one check of mirrors, at inference (``flip_average``) and in training (``flip_augment``)."""
    unknown = [f for f in flips if f not in SlidingWindow.FLIP_AXES]
    if unknown or len(set(flips)) != len(flips):
        raise MetadataError(key, f"must be distinct names among {sorted(SlidingWindow.FLIP_AXES)}, got {list(flips)}")
    if "left_right" in flips and any(lab.laterality for lab in labels):
        raise MetadataError(key, "a left-right flip would swap lateralised labels (a label has a laterality)")


@dataclass(frozen=True)
class SegmentLabel:
    """One output label of a segmentation model.

    ``value``: the value in the application's label map (0 = background); output channel k > 0 of the network
    is the k-th label with ``value`` > 0. ``source_value``: the value of that structure in the training label
    maps. ``label``: the SEG segment label. ``category``, ``type`` and the optional ``laterality`` and
    ``anatomic_region`` are the DICOM SEG segmented-property codes (needed for every foreground label).
    """

    value: int
    label: str
    source_value: int | None = None
    category: CodedValue | None = None
    type: CodedValue | None = None
    laterality: CodedValue | None = None
    anatomic_region: CodedValue | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    CODES: ClassVar[tuple[str, ...]] = ("category", "type", "laterality", "anatomic_region")
    KEYS: ClassVar[tuple[str, ...]] = ("value", "source_value", "label", *CODES)

    def __post_init__(self) -> None:
        if self.value < 0 or self.value > 255:
            raise MetadataError("value", f"must be in 0..255 (uint8 label map), got {self.value}")
        _str(self.label, "label")
        if self.value > 0:
            for k in ("source_value", "category", "type"):
                if getattr(self, k) is None:
                    raise MetadataError(k, f"missing (needed by foreground label {self.value})")

    @property
    def is_foreground(self) -> bool:
        return self.value > 0

    @classmethod
    def from_dict(cls, d: Any, key: str) -> SegmentLabel:
        m = _mapping(d, key)
        codes = {k: CodedValue.from_dict(m[k], _at(key, k)) if k in m else None for k in cls.CODES}
        return _build(
            key, cls,
            value=_int(_require(m, "value", key), _at(key, "value")),
            label=_str(_require(m, "label", key), _at(key, "label")),
            source_value=None if "source_value" not in m else _int(m["source_value"], _at(key, "source_value")),
            category=codes["category"], type=codes["type"], laterality=codes["laterality"],
            anatomic_region=codes["anatomic_region"], extra=_extra(m, cls.KEYS))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"value": self.value}
        _put(out, "source_value", self.source_value)
        out["label"] = self.label
        for k in self.CODES:
            code: CodedValue | None = getattr(self, k)
            if code is not None:
                out[k] = code.to_dict()
        return {**out, **copy.deepcopy(dict(self.extra))}


@dataclass(frozen=True)
class SacralRegion:
    """The tumour model's domain: a box in the normalised hip frame (``low`` < ``high`` on u, v, w, dimensionless),
    in practice the training tumours' centroids widened by ``margin``; ``source`` says how it was made.
    :attr:`region` is the :class:`core.hip_frame.FrameRegion` the post-processing uses."""

    low: tuple[float, float, float]
    high: tuple[float, float, float]
    margin: float | None = None
    source: str | None = None
    coordinates: str = FRAME_COORDINATES
    extra: Mapping[str, Any] = field(default_factory=dict)

    KEYS: ClassVar[tuple[str, ...]] = ("coordinates", "low", "high", "margin", "source")

    def __post_init__(self) -> None:
        if any(a >= b for a, b in zip(self.low, self.high)):
            raise MetadataError("high", f"must exceed low on u, v and w; low {list(self.low)}, high {list(self.high)}")

    @classmethod
    def around(cls, locations: Any, margin: float, source: str) -> SacralRegion:
        """The box around ``locations`` ((N, 3) normalised ``(u, v, w)``) widened by ``margin``, bounds rounded
        to 4 decimals (as stored)."""
        from core.hip_frame import FrameRegion
        r = FrameRegion.around(locations, margin)
        return cls(low=_round3(r.low), high=_round3(r.high), margin=margin, source=source)

    @property
    def region(self) -> FrameRegion:
        """The box as a :class:`core.hip_frame.FrameRegion`."""
        from core.hip_frame import FrameRegion
        return FrameRegion(self.low, self.high)

    @classmethod
    def from_dict(cls, d: Any, key: str) -> SacralRegion:
        m = _mapping(d, key)
        return _build(
            key, cls,
            low=_triple_float(_require(m, "low", key), _at(key, "low")),
            high=_triple_float(_require(m, "high", key), _at(key, "high")),
            margin=None if "margin" not in m else _float(m["margin"], _at(key, "margin")),
            source=_opt_str(m, "source", key),
            coordinates=_str(m.get("coordinates", FRAME_COORDINATES), _at(key, "coordinates")),
            extra=_extra(m, cls.KEYS))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"coordinates": self.coordinates, "low": list(self.low), "high": list(self.high)}
        _put(out, "margin", self.margin)
        _put(out, "source", self.source)
        return {**out, **copy.deepcopy(dict(self.extra))}


def _round3(v: Sequence[float]) -> tuple[float, float, float]:
    return (round(float(v[0]), 4), round(float(v[1]), 4), round(float(v[2]), 4))


@dataclass(frozen=True)
class FeatureSpec:
    """One tabular input of the classifier, in input order: the network sees ``(x - mean) / std`` where ``x`` is
    the raw value (units of :mod:`core.clinical`; ``sex`` encoded as ``encoding`` says, ``M=1,F=0``) or
    ``impute`` (raw units) when the value is missing. ``n``: how many training values the statistics used."""

    name: str
    mean: float
    std: float
    impute: float | None = None
    n: int | None = None
    encoding: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    KEYS: ClassVar[tuple[str, ...]] = ("name", "mean", "std", "impute", "n", "encoding")

    def __post_init__(self) -> None:
        _str(self.name, "name")
        if not (math.isfinite(self.mean) and math.isfinite(self.std) and self.std > 0):
            raise MetadataError("std", f"feature {self.name!r} needs a finite mean and std > 0, "
                                       f"got {self.mean}, {self.std}")

    @classmethod
    def from_dict(cls, d: Any, key: str = "") -> FeatureSpec:
        m = _mapping(d, key or "feature")
        return _build(
            key, cls,
            name=_str(_require(m, "name", key), _at(key, "name")),
            mean=_float(_require(m, "mean", key), _at(key, "mean")),
            std=_float(_require(m, "std", key), _at(key, "std")),
            impute=None if m.get("impute") is None else _float(m["impute"], _at(key, "impute")),
            n=None if "n" not in m else _int(m["n"], _at(key, "n")),
            encoding=_opt_str(m, "encoding", key), extra=_extra(m, cls.KEYS))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "mean": self.mean, "std": self.std}
        for k in ("impute", "n", "encoding"):
            _put(out, k, getattr(self, k))
        return {**out, **copy.deepcopy(dict(self.extra))}


@dataclass(frozen=True)
class CropSpec:
    """The classifier's image input (``core.classify.tumour_crop``): a cube around the tumour's bounding box,
    side = largest extent + 2 x ``margin_mm`` (at least ``min_side_mm``), resampled to ``size`` (D-H-W voxels),
    CT scaled by ``intensity``. ``antialias``: the CT is block-averaged to about the crop's spacing before the
    resampling (as a segmentation model's ``antialias``), so that a 0.7 mm series and a 3 mm one give crops of
    about the same noise; absent means False (classifiers up to 0.4.0)."""

    size: tuple[int, int, int]
    margin_mm: float
    min_side_mm: float
    intensity: IntensityWindow
    antialias: bool = False
    extra: Mapping[str, Any] = field(default_factory=dict)

    KEYS: ClassVar[tuple[str, ...]] = ("size", "margin_mm", "min_side_mm", "intensity", "antialias")

    def __post_init__(self) -> None:
        if self.margin_mm < 0:
            raise MetadataError("margin_mm", f"must be >= 0 mm, got {self.margin_mm}")
        if self.min_side_mm <= 0:
            raise MetadataError("min_side_mm", f"must be > 0 mm, got {self.min_side_mm}")

    @classmethod
    def from_dict(cls, d: Any, key: str = "crop") -> CropSpec:
        m = _mapping(d, key)
        return _build(
            key, cls,
            size=_triple_int(_require(m, "size", key), _at(key, "size")),
            margin_mm=_float(_require(m, "margin_mm", key), _at(key, "margin_mm")),
            min_side_mm=_float(_require(m, "min_side_mm", key), _at(key, "min_side_mm")),
            intensity=IntensityWindow.from_dict(_require(m, "intensity", key), _at(key, "intensity")),
            antialias=_bool(m.get("antialias", False), _at(key, "antialias")),
            extra=_extra(m, cls.KEYS))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"size": list(self.size), "margin_mm": self.margin_mm,
                               "min_side_mm": self.min_side_mm, "intensity": self.intensity.to_dict()}
        if self.antialias:  # written only when set, so that earlier metadata round-trips unchanged
            out["antialias"] = True
        return {**out, **copy.deepcopy(dict(self.extra))}


@dataclass(frozen=True)
class ModelVariant:
    """An additional TorchScript file of a model (the classifier's ablation variants): ``file`` relative to the
    model folder, its ``sha256`` (checked before loading), and free-form records."""

    file: str
    sha256: str
    architecture: Mapping[str, Any] | None = None
    training: Mapping[str, Any] | None = None
    internal_validation: Mapping[str, Any] | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    KEYS: ClassVar[tuple[str, ...]] = ("file", "sha256", "architecture", "training", "internal_validation")

    def __post_init__(self) -> None:
        _check_file(self.file, "file")
        _check_sha256(self.sha256, "sha256", empty=False)

    @classmethod
    def from_dict(cls, d: Any, key: str) -> ModelVariant:
        m = _mapping(d, key)
        return _build(
            key, cls,
            file=_str(_require(m, "file", key), _at(key, "file")),
            sha256=_str(_require(m, "sha256", key), _at(key, "sha256")),
            architecture=_opt_record(m, "architecture", key), training=_opt_record(m, "training", key),
            internal_validation=_opt_record(m, "internal_validation", key), extra=_extra(m, cls.KEYS))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"file": self.file, "sha256": self.sha256}
        for k in ("architecture", "training", "internal_validation"):
            _put(out, k, getattr(self, k))
        return {**out, **copy.deepcopy(dict(self.extra))}


def _check_file(v: str, key: str) -> None:
    _str(v, key)
    if v.startswith("/") or ".." in v.split("/"):
        raise MetadataError(key, f"must be a path inside the model folder, got {v!r}")


def _check_sha256(v: str, key: str, *, empty: bool) -> None:
    if not (empty and v == "") and (len(v) != 64 or any(c not in "0123456789abcdef" for c in v)):
        raise MetadataError(key, f"must be 64 lower-case hex digits{' or empty' if empty else ''}, got {v!r}")


# ---------------------------------------------------------------------------------------------- task parts
@dataclass(frozen=True)
class SegmentationSpec:
    """What a segmentation model needs at inference (``core.segment``) and training (``training.train_seg``).

    ``spacing_mm``: model-grid spacing, D-H-W, mm, on the canonical LPS grid (``orientation``); ``antialias``:
    block-average before resampling (``core.segment.canonical_resample``); ``intensity``: the CT window;
    ``sliding_window``: inference ROI; ``labels``: background first, then one per output channel;
    ``sacral_region``: the tumour model's domain in the hip frame (None for other models);
    ``min_mean_probability``: the tumour model's confidence rule, in (0, 1) or None: a tumour (after
    post-processing) is reported only when the mean foreground probability over its voxels is at least this
    (:func:`core.segment.mean_probability_in`, :func:`core.assessment.tumour_confident`).
    """

    spacing_mm: tuple[float, float, float]
    intensity: IntensityWindow
    sliding_window: SlidingWindow
    labels: tuple[SegmentLabel, ...]
    antialias: bool = False
    orientation: str = CANONICAL_ORIENTATION
    sacral_region: SacralRegion | None = None
    min_mean_probability: float | None = None

    KEYS: ClassVar[tuple[str, ...]] = ("spacing_mm", "antialias", "orientation", "intensity", "sliding_window",
                                       "labels", "sacral_region", "min_mean_probability")

    def __post_init__(self) -> None:
        if min(self.spacing_mm) <= 0:
            raise MetadataError("spacing_mm", f"must be positive (D-H-W, mm), got {list(self.spacing_mm)}")
        if not self.foreground:
            raise MetadataError("labels", "must list at least one label with value > 0")
        values = [lab.value for lab in self.labels]
        if len(set(values)) != len(values):
            raise MetadataError("labels", f"label values must be unique, got {values}")
        if self.min_mean_probability is not None and not 0.0 < self.min_mean_probability < 1.0:
            raise MetadataError("min_mean_probability", f"must lie in (0, 1), got {self.min_mean_probability}")
        check_flips(self.sliding_window.flip_average, "sliding_window.flip_average", self.foreground)

    @property
    def foreground(self) -> tuple[SegmentLabel, ...]:
        """The labels with ``value`` > 0, in output channel order (channel 1, 2, ...)."""
        return tuple(lab for lab in self.labels if lab.is_foreground)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SegmentationSpec:
        """From the flat metadata mapping (or a training configuration section): reads only :attr:`KEYS`."""
        labels = _seq(_require(d, "labels"), "labels")
        return _build(
            "", cls,
            spacing_mm=_triple_float(_require(d, "spacing_mm"), "spacing_mm"),
            intensity=IntensityWindow.from_dict(_require(d, "intensity"), "intensity"),
            sliding_window=SlidingWindow.from_dict(_require(d, "sliding_window"), "sliding_window"),
            labels=tuple(SegmentLabel.from_dict(lab, f"labels[{i}]") for i, lab in enumerate(labels)),
            antialias=_bool(d.get("antialias", False), "antialias"),
            orientation=_str(d.get("orientation", CANONICAL_ORIENTATION), "orientation"),
            sacral_region=SacralRegion.from_dict(d["sacral_region"], "sacral_region")
            if d.get("sacral_region") else None,
            min_mean_probability=None if d.get("min_mean_probability") is None
            else _float(d["min_mean_probability"], "min_mean_probability"))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"spacing_mm": list(self.spacing_mm), "antialias": self.antialias,
                               "orientation": self.orientation, "intensity": self.intensity.to_dict(),
                               "sliding_window": self.sliding_window.to_dict(),
                               "labels": [lab.to_dict() for lab in self.labels]}
        if self.sacral_region is not None:
            out["sacral_region"] = self.sacral_region.to_dict()
        _put(out, "min_mean_probability", self.min_mean_probability)
        return out


@dataclass(frozen=True)
class ClassificationSpec:
    """What the tumour classifier needs (``operators.classifier``, ``core.classify``, ``core.clinical``).

    ``classes``: class keys in output order (keys of ``core.codes.TUMOUR_TYPE_CODES``); ``features``: tabular
    inputs in input order; ``crop``: the image input; ``variants``: ablation variants by name.
    """

    classes: tuple[str, ...]
    features: tuple[FeatureSpec, ...]
    crop: CropSpec
    variants: Mapping[str, ModelVariant] = field(default_factory=dict)

    KEYS: ClassVar[tuple[str, ...]] = ("classes", "features", "crop", "variants")

    def __post_init__(self) -> None:
        if not self.classes:
            raise MetadataError("classes", "must list at least one class")
        for i, c in enumerate(self.classes):
            _str(c, f"classes[{i}]")
        if len(set(self.classes)) != len(self.classes):
            raise MetadataError("classes", f"class names must be unique, got {list(self.classes)}")
        names = [f.name for f in self.features]
        if len(set(names)) != len(names):
            raise MetadataError("features", f"feature names must be unique, got {names}")

    @property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.features)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ClassificationSpec:
        """From the flat metadata mapping: reads only :attr:`KEYS`."""
        features = _seq(_require(d, "features"), "features")
        variants = _mapping(d.get("variants", {}), "variants")
        return _build(
            "", cls,
            classes=tuple(_seq(_require(d, "classes"), "classes")),
            features=tuple(FeatureSpec.from_dict(f, f"features[{i}]") for i, f in enumerate(features)),
            crop=CropSpec.from_dict(_require(d, "crop"), "crop"),
            variants={k: ModelVariant.from_dict(v, f"variants.{k}") for k, v in variants.items()})

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"classes": list(self.classes), "features": [f.to_dict() for f in self.features],
                               "crop": self.crop.to_dict()}
        if self.variants:
            out["variants"] = {k: v.to_dict() for k, v in self.variants.items()}
        return out


# ---------------------------------------------------------------------------------------------- the whole file
@dataclass(frozen=True)
class ModelMetadata:
    """Everything a model folder's ``metadata.json`` says.

    Args:
        name: the model folder's name (``hip_bone_seg``, ``tumour_seg``, ``tumour_classifier``).
        version: the models' release (semantic version string).
        task: ``segmentation`` (then ``segmentation`` is required) or ``classification`` (``classification``).
        sha256: hex sha256 of ``file``; empty in a draft before the weights are written (``write_model`` fills it).
        file: the TorchScript file, relative to the model folder.
        description, training_data, intended_use, trained_on: free text (None: absent from the file).
        architecture, training, internal_validation: free-form records (None: absent).
        segmentation, classification: the task's part (see :class:`SegmentationSpec`, :class:`ClassificationSpec`).
        extra: top-level keys this version does not know, written back unchanged.

    Raises:
        MetadataError: a value is invalid (the message starts with its key).
    """

    name: str
    version: str
    task: str
    sha256: str = ""
    file: str = MODEL_FILE
    description: str | None = None
    training_data: str | None = None
    intended_use: str | None = None
    trained_on: str | None = None
    architecture: Mapping[str, Any] | None = None
    training: Mapping[str, Any] | None = None
    internal_validation: Mapping[str, Any] | None = None
    segmentation: SegmentationSpec | None = None
    classification: ClassificationSpec | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    TEXT: ClassVar[tuple[str, ...]] = ("description", "training_data", "intended_use", "trained_on")
    RECORDS: ClassVar[tuple[str, ...]] = ("architecture", "training", "internal_validation")
    KEYS: ClassVar[tuple[str, ...]] = ("name", "version", "task", "sha256", "file", *TEXT, *RECORDS)

    def __post_init__(self) -> None:
        _str(self.name, "name")
        _str(self.version, "version")
        if self.task not in TASKS:
            raise MetadataError("task", f"must be one of {list(TASKS)}, got {self.task!r}")
        _check_sha256(self.sha256, "sha256", empty=True)
        _check_file(self.file, "file")
        if (self.segmentation is not None) != (self.task == "segmentation"):
            raise MetadataError("task", f"a {self.task} model must {'' if self.task == 'segmentation' else 'not '}"
                                        "have the segmentation keys")
        if (self.classification is not None) != (self.task == "classification"):
            raise MetadataError("task", f"a {self.task} model must {'' if self.task == 'classification' else 'not '}"
                                        "have the classification keys")

    @property
    def frame_region(self) -> FrameRegion | None:
        """The tumour model's domain in the hip frame (its ``sacral_region``), None when the model has none."""
        seg = self.segmentation
        return seg.sacral_region.region if seg is not None and seg.sacral_region is not None else None

    @property
    def seg(self) -> SegmentationSpec:
        """The segmentation part; :class:`ModelError` when this is not a segmentation model."""
        if self.segmentation is None:
            raise ModelError(f"model '{self.name}' is a {self.task} model, not a segmentation model")
        return self.segmentation

    @property
    def clf(self) -> ClassificationSpec:
        """The classification part; :class:`ModelError` when this is not a classification model."""
        if self.classification is None:
            raise ModelError(f"model '{self.name}' is a {self.task} model, not a classification model")
        return self.classification

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ModelMetadata:
        """Parse the JSON mapping of a ``metadata.json`` (the one reader); ``name``, ``version``, ``task`` and
        ``sha256`` are required, the task's keys too. Raises :class:`MetadataError` naming the bad key."""
        d = _mapping(d, "(metadata)")
        for key in ("name", "version", "task", "sha256"):
            _require(d, key)
        task = _str(d["task"], "task")
        if task not in TASKS:
            raise MetadataError("task", f"must be one of {list(TASKS)}, got {task!r}")
        seg = SegmentationSpec.from_dict(d) if task == "segmentation" else None
        clf = ClassificationSpec.from_dict(d) if task == "classification" else None
        known = (*cls.KEYS, *(SegmentationSpec.KEYS if seg else ()), *(ClassificationSpec.KEYS if clf else ()))
        return cls(
            name=_str(d["name"], "name"), version=_str(d["version"], "version"), task=task,
            sha256=_str(d["sha256"], "sha256", empty=True), file=_str(d.get("file", MODEL_FILE), "file"),
            description=_opt_str(d, "description"), training_data=_opt_str(d, "training_data"),
            intended_use=_opt_str(d, "intended_use"), trained_on=_opt_str(d, "trained_on"),
            architecture=_opt_record(d, "architecture"), training=_opt_record(d, "training"),
            internal_validation=_opt_record(d, "internal_validation"),
            segmentation=seg, classification=clf, extra=_extra(d, known))

    def to_dict(self) -> dict[str, Any]:
        """The JSON mapping of ``metadata.json`` (the one writer's content; ``from_dict`` inverts it exactly).
        Key order: identity, the task's keys, provenance, records, unknown keys, then ``file`` and ``sha256``."""
        out: dict[str, Any] = {"name": self.name, "task": self.task}
        _put(out, "description", self.description)
        if self.segmentation is not None:
            out.update(self.segmentation.to_dict())
        if self.classification is not None:
            out.update(self.classification.to_dict())
        out["version"] = self.version
        for k in (*self.TEXT[1:], *self.RECORDS):
            _put(out, k, getattr(self, k))
        out.update(copy.deepcopy(dict(self.extra)))
        out["file"] = self.file
        out["sha256"] = self.sha256
        return out
