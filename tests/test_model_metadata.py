"""ModelMetadata: the one reader and writer of metadata.json (round trip on the shipped files, a bad value named by
its key, unknown keys kept), and the one class list (the classifier's metadata, the generator's TUMOUR_CLASSES,
the codes of core/codes.py)."""
from __future__ import annotations

import copy
import json
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch

from conftest import REPO
from core.codes import PROBABILITY_CODES, TUMOUR_TYPE_CODES, tumour_class_key
from core.model_metadata import (
    CANONICAL_ORIENTATION, FeatureSpec, IntensityWindow, MetadataError, ModelMetadata, SegmentationSpec,
)
from core.models import ModelError, load_model, read_metadata, sha256_of, write_model

pytestmark = pytest.mark.unit

MODELS = REPO / "models"
NAMES = ("hip_bone_seg", "tumour_seg", "tumour_classifier")


def shipped(name: str) -> dict[str, Any]:
    d: dict[str, Any] = json.loads((MODELS / name / "metadata.json").read_text())
    return d


@pytest.mark.parametrize("name", NAMES)
def test_shipped_metadata_round_trips_exactly(name: str) -> None:
    d = shipped(name)
    meta = ModelMetadata.from_dict(d)
    assert meta.to_dict() == d
    assert ModelMetadata.from_dict(meta.to_dict()) == meta
    assert meta.extra == {}   # every key of the shipped files is a typed field
    assert read_metadata(MODELS / name) == meta


def test_shipped_metadata_typed_values() -> None:
    hip = read_metadata(MODELS / "hip_bone_seg")
    assert hip.task == "segmentation" and hip.seg.spacing_mm == (3.0, 3.0, 3.0) and hip.seg.antialias
    assert hip.seg.orientation == CANONICAL_ORIENTATION
    assert hip.seg.intensity == IntensityWindow(a_min=-1000.0, a_max=1500.0)
    assert hip.seg.sliding_window.roi_size == (48, 96, 96) and hip.seg.sliding_window.mode == "gaussian"
    left, right = hip.seg.foreground
    assert (left.value, left.source_value, left.label) == (1, 1, "hip bone left")
    assert left.type is not None and left.type.value == "29836001"
    assert left.laterality is not None and left.laterality.meaning == "Left"
    assert right.laterality is not None and right.laterality.value == "24028007"
    assert hip.seg.sacral_region is None and len(hip.sha256) == 64
    tumour = read_metadata(MODELS / "tumour_seg")
    region = tumour.seg.sacral_region
    assert region is not None and region.margin == 0.15 and region.region.contains((0.0, 0.4, 0.1))
    (lesion,) = tumour.seg.foreground
    assert lesion.anatomic_region is not None and lesion.anatomic_region.meaning == "Sacrum"
    clf = read_metadata(MODELS / "tumour_classifier")
    assert clf.task == "classification" and clf.segmentation is None
    assert clf.clf.feature_names == ("sex", "age_years", "tumour_volume_ml", "loc_u", "loc_v", "loc_w")
    assert clf.clf.features[0].encoding == "M=1,F=0" and clf.clf.crop.size == (40, 40, 40)
    assert set(clf.clf.variants) == {"image_only", "clinical_only", "clinical_location"}
    with pytest.raises(ModelError, match="not a segmentation model"):
        _ = clf.seg
    with pytest.raises(ModelError, match="not a classification model"):
        _ = hip.clf


def _bad(name: str, edit: Any) -> dict[str, Any]:
    d = copy.deepcopy(shipped(name))
    edit(d)
    return d


@pytest.mark.parametrize(("name", "edit", "key"), [
    ("hip_bone_seg", lambda d: d.update(spacing_mm=[3.0, 3.0]), "spacing_mm"),
    ("hip_bone_seg", lambda d: d.update(spacing_mm=[3.0, 0.0, 3.0]), "spacing_mm"),
    ("hip_bone_seg", lambda d: d["labels"][1].pop("value"), "labels[1].value"),
    ("hip_bone_seg", lambda d: d["labels"][2].pop("category"), "labels[2].category"),
    ("hip_bone_seg", lambda d: d["labels"][1]["type"].pop("value"), "labels[1].type.value"),
    ("hip_bone_seg", lambda d: d.update(labels=[d["labels"][0]]), "labels"),
    ("hip_bone_seg", lambda d: d["sliding_window"].update(roi_size=[48, 96]), "sliding_window.roi_size"),
    ("hip_bone_seg", lambda d: d["sliding_window"].update(overlap=1.5), "sliding_window.overlap"),
    ("hip_bone_seg", lambda d: d["sliding_window"].update(cpu_precision="fp16"), "sliding_window.cpu_precision"),
    ("tumour_seg", lambda d: d["sliding_window"].update(flip_average=["head_feet"]), "sliding_window.flip_average"),
    ("tumour_seg", lambda d: d["sliding_window"].update(flip_average="left_right"), "sliding_window.flip_average"),
    # a left-right mirror would turn the left hip bone into the right one
    ("hip_bone_seg", lambda d: d["sliding_window"].update(flip_average=["left_right"]), "sliding_window.flip_average"),
    ("hip_bone_seg", lambda d: d["intensity"].update(a_max=-2000.0), "intensity.a_max"),
    ("hip_bone_seg", lambda d: d.update(antialias="yes"), "antialias"),
    ("hip_bone_seg", lambda d: d.pop("name"), "name"),
    ("hip_bone_seg", lambda d: d.update(task="detection"), "task"),
    ("hip_bone_seg", lambda d: d.update(sha256="abc"), "sha256"),
    ("tumour_seg", lambda d: d["sacral_region"].update(low=[0.0, 0.0]), "sacral_region.low"),
    ("tumour_seg", lambda d: d["sacral_region"].update(high=[-1.0, 0.0, 0.0]), "sacral_region.high"),
    ("tumour_classifier", lambda d: d.update(classes=[]), "classes"),
    ("tumour_classifier", lambda d: d.update(classes=["chordoma", "chordoma"]), "classes"),
    ("tumour_classifier", lambda d: d["features"][2].update(std=0.0), "features[2].std"),
    ("tumour_classifier", lambda d: d["features"][0].pop("mean"), "features[0].mean"),
    ("tumour_classifier", lambda d: d["crop"].update(size=[40, 40]), "crop.size"),
    ("tumour_classifier", lambda d: d["crop"]["intensity"].pop("a_min"), "crop.intensity.a_min"),
    ("tumour_classifier", lambda d: d["variants"]["image_only"].update(sha256="x"), "variants.image_only.sha256"),
    ("tumour_classifier", lambda d: d.pop("crop"), "crop"),
])
def test_bad_value_is_named_by_its_key(name: str, edit: Any, key: str) -> None:
    with pytest.raises(MetadataError) as err:
        ModelMetadata.from_dict(_bad(name, edit))
    assert err.value.key == key and str(err.value).startswith(f"{key}: ")
    assert isinstance(err.value, ValueError) and isinstance(err.value, ModelError)


def test_constructor_checks_like_the_reader() -> None:
    hip = read_metadata(MODELS / "hip_bone_seg")
    with pytest.raises(MetadataError, match=r"^spacing_mm: "):
        replace(hip.seg, spacing_mm=(3.0, -1.0, 3.0))
    with pytest.raises(MetadataError, match=r"^task: "):
        replace(hip, task="classification")   # a classification model without its classes, features and crop
    with pytest.raises(MetadataError, match=r"^std: "):
        FeatureSpec(name="age_years", mean=50.0, std=0.0)
    draft = replace(hip, sha256="")           # what training builds before the weights exist
    assert draft.to_dict()["sha256"] == ""


def test_unknown_keys_survive_a_round_trip() -> None:
    d = shipped("tumour_classifier")
    d["future_key"] = {"a": [1, 2]}
    d["features"][0]["clip"] = [0, 1]
    d["crop"]["intensity"]["gamma"] = 1.0
    d["variants"]["image_only"]["note"] = "kept"
    meta = ModelMetadata.from_dict(d)
    assert meta.extra == {"future_key": {"a": [1, 2]}} and meta.clf.features[0].extra == {"clip": [0, 1]}
    assert meta.to_dict() == d
    h = shipped("hip_bone_seg")
    h["labels"][1]["tracking_id"] = "HL"
    h["sliding_window"]["padding_mode"] = "constant"
    assert ModelMetadata.from_dict(h).to_dict() == h


def test_segmentation_spec_from_the_training_config() -> None:
    """Training builds the segmentation part from its config section (extra config keys ignored): the shipped
    models' parts, but for the sacral region that training computes."""
    import yaml
    cfg = yaml.safe_load((REPO / "training" / "config.yaml").read_text())
    for name, section in cfg["segmentation"].items():
        stored = read_metadata(MODELS / name).seg
        assert replace(SegmentationSpec.from_dict(section), sacral_region=stored.sacral_region) == stored


def test_write_model_is_the_writer_and_load_model_the_reader(tmp_path: Path) -> None:
    meta = replace(read_metadata(MODELS / "hip_bone_seg"), sha256="", file="other.ts")
    module = torch.jit.script(torch.nn.Conv3d(1, 3, 1))
    written = write_model(tmp_path / "hip_bone_seg", module, meta)
    assert written.sha256 == sha256_of(tmp_path / "hip_bone_seg" / "model.ts") and written.file == "model.ts"
    assert read_metadata(tmp_path / "hip_bone_seg") == written == replace(meta, sha256=written.sha256,
                                                                          file="model.ts")
    loaded = load_model(tmp_path, "hip_bone_seg", torch.device("cpu"))
    assert loaded.metadata == written and loaded.version == meta.version and loaded.sha256 == written.sha256


def test_load_model_refuses_bad_metadata_naming_the_key(tmp_path: Path) -> None:
    shutil.copytree(MODELS / "hip_bone_seg", tmp_path / "hip_bone_seg")
    path = tmp_path / "hip_bone_seg" / "metadata.json"
    path.write_text(json.dumps(_bad("hip_bone_seg", lambda d: d.update(spacing_mm=[3.0, 3.0]))))
    with pytest.raises(ModelError, match=r"^spacing_mm: must have 3 entries .*hip_bone_seg"):
        load_model(tmp_path, "hip_bone_seg", torch.device("cpu"))


# ------------------------------------------------------------------------------------------ the one class list
def test_every_model_class_has_codes() -> None:
    classes = read_metadata(MODELS / "tumour_classifier").clf.classes
    for c in classes:
        assert tumour_class_key(c) == c   # canonical keys, as result.json and the SR write them
        assert c in TUMOUR_TYPE_CODES and c in PROBABILITY_CODES


def test_generator_classes_are_the_shipped_classifiers() -> None:
    from training.phantom.params import TUMOUR_CLASSES
    assert TUMOUR_CLASSES == read_metadata(MODELS / "tumour_classifier").clf.classes   # same order
    import yaml
    cfg = yaml.safe_load((REPO / "training" / "config.yaml").read_text())
    assert "classes" not in cfg["classifier"]   # nothing else lists them
