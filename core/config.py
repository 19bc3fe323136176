"""The application's configuration (``app.yaml``) as frozen, typed values: parsed once, every default here.

:func:`parse_config` turns the YAML mapping into an :class:`AppConfig`; a bad value raises ``ValueError``
whose message names the key (``analysis.min_coverage_mm``), an unknown key too. Where a default below could
disagree with ``app/app.yaml``, the YAML's value is the default (``tests/test_config.py`` checks that parsing
the shipped app.yaml equals the defaults for every section it sets).

Sections: ``application`` (required: title and version), ``resources`` (read by holoscan-cli; only
``memory`` is used here), ``series_selection`` (the rules of :mod:`core.series_selection`, defaults
:data:`core.dicom_header.DEFAULT_RULES`), ``models``, ``analysis`` and ``outputs``.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from core.codes import KOS_TITLES
from core.dicom_header import merge_rules

#: the sections a configuration must have (the others take their defaults when absent)
REQUIRED_SECTIONS = ("application", "series_selection", "models")
DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class ApplicationConfig:
    """Package identity: ``title`` and semantic ``version`` (== app.json/pkg.json version == image tag)."""

    title: str
    version: str


@dataclass(frozen=True)
class ModelsConfig:
    """Folder names of the three models under the models path, and the device (auto | cpu | cuda)."""

    hip_bone_seg: str = "hip_bone_seg"
    tumour_seg: str = "tumour_seg"
    tumour_classifier: str = "tumour_classifier"
    device: str = "auto"

    @property
    def segmentation(self) -> tuple[str, str]:
        """The two segmentation models (hip bones, tumour), in SEG segment order."""
        return (self.hip_bone_seg, self.tumour_seg)


@dataclass(frozen=True)
class AnalysisConfig:
    """Thresholds of :mod:`core.assessment` and the memory guard (units in the names)."""

    min_coverage_mm: float = 100.0          # scan extent along the patient axis below this: not_applicable
    min_hip_bone_volume_ml: float = 50.0    # a side below this counts as absent: not_applicable
    max_hip_bone_volume_ratio: float = 2.0  # larger / smaller hip-bone volume above this: not_applicable
    min_tumour_volume_ml: float = 10.0      # a tumour below this counts as none: no_tumour
    #: a tumour within this of a face of the grid touches the scan edge; None: one voxel of the tumour model's
    #: grid (its metadata's largest spacing_mm), closer than which a mask resampled from it cannot follow the edge
    tumour_edge_margin_mm: float | None = None
    max_voxels: int | None = 250_000_000    # rows x columns x slices above this: refused (exit 2); None: no limit


@dataclass(frozen=True)
class OutputsConfig:
    """What a run writes besides the SEG, the SR and result.json; ``kos_title`` is a key of CID 7010 titles."""

    key_images: bool = True
    key_object_selection: bool = True
    kos_title: str = "of_interest"


@dataclass(frozen=True)
class AppConfig:
    """The whole configuration. ``series_selection`` is the complete rules mapping (defaults merged in)."""

    application: ApplicationConfig
    series_selection: Mapping[str, Any] = field(default_factory=lambda: merge_rules(None))
    models: ModelsConfig = ModelsConfig()
    analysis: AnalysisConfig = AnalysisConfig()
    outputs: OutputsConfig = OutputsConfig()
    memory: str = "?"                       # resources.memory as requested from the hosting service


def _section(raw: Mapping[str, Any], name: str, source: str) -> Mapping[str, Any]:
    value = raw.get(name)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ValueError(f"configuration {source}: '{name}' must be a mapping")
    return value


def _number(value: Any, key: str, source: str, *, positive: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"configuration {source}: {key} must be a number, got {value!r}")
    if positive and not value > 0:
        raise ValueError(f"configuration {source}: {key} must be positive, got {value!r}")
    return float(value)


def _typed(cls: type[Any], section: Mapping[str, Any], name: str, source: str) -> Any:
    """An instance of the flat dataclass ``cls`` from ``section``, every value checked against its field."""
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(section) - set(known))
    if unknown:
        raise ValueError(f"configuration {source}: unknown '{name}' key(s) {unknown}; known: {sorted(known)}")
    values: dict[str, Any] = {}
    for key, value in section.items():
        kind, full = str(known[key].type), f"{name}.{key}"
        if kind == "bool":
            if not isinstance(value, bool):
                raise ValueError(f"configuration {source}: {full} must be true or false, got {value!r}")
        elif kind == "float":
            value = _number(value, full, source)
        elif kind == "float | None":
            value = None if value is None else _number(value, full, source)
        elif kind.startswith("int"):
            if value is not None:
                if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                    raise ValueError(f"configuration {source}: {full} must be a positive integer, got {value!r}")
        elif kind == "str":
            if not isinstance(value, str | int | float) or isinstance(value, bool) or str(value).strip() == "":
                raise ValueError(f"configuration {source}: {full} must be a non-empty string, got {value!r}")
            value = str(value)
        values[key] = value
    return cls(**values)


def parse_config(raw: Any, source: str = "app.yaml") -> AppConfig:
    """The typed configuration from the parsed YAML ``raw``; ``source`` names the file in error messages.

    Raises:
        ValueError: a required section is missing, or a key is unknown or has a bad value (the message
            names the key, e.g. ``outputs.kos_title``).
    """
    if not isinstance(raw, Mapping):
        raise ValueError(f"configuration {source} is not a mapping")
    for key in REQUIRED_SECTIONS:
        if key not in raw:
            raise ValueError(f"configuration {source} lacks the '{key}' section")
    app = _section(raw, "application", source)
    for key in ("title", "version"):
        if app.get(key) is None or str(app[key]).strip() == "":
            raise ValueError(f"configuration {source}: application.{key} is required")
    application = ApplicationConfig(title=str(app["title"]), version=str(app["version"]))
    try:
        rules = merge_rules(dict(_section(raw, "series_selection", source)))
    except ValueError as e:
        raise ValueError(f"configuration {source}: {e}") from None
    models = _typed(ModelsConfig, _section(raw, "models", source), "models", source)
    if models.device not in DEVICES:
        raise ValueError(f"configuration {source}: models.device must be one of {list(DEVICES)}, got {models.device!r}")
    analysis = _typed(AnalysisConfig, _section(raw, "analysis", source), "analysis", source)
    outputs = _typed(OutputsConfig, _section(raw, "outputs", source), "outputs", source)
    if outputs.kos_title not in KOS_TITLES:
        raise ValueError(f"configuration {source}: outputs.kos_title must be one of {sorted(KOS_TITLES)}, "
                         f"got {outputs.kos_title!r}")
    memory = _section(raw, "resources", source).get("memory", "?")
    return AppConfig(application=application, series_selection=rules, models=models, analysis=analysis,
                     outputs=outputs, memory=str(memory))
