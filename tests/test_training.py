"""Smoke training of all three models (a few iterations each) and what the exported folders must hold."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from core.models import ModelError, load_model, load_variant, sha256_of
from training.phantom.params import TUMOUR_CLASSES

pytestmark = pytest.mark.system

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def quick_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("train")
    proc = subprocess.run([sys.executable, "-m", "training.train_all", "--quick", "--work", str(work / "work"),
                           "--out", str(work / "models")], cwd=REPO, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return work / "models"


def test_segmenters_exported_with_complete_metadata(quick_models: Path) -> None:
    import yaml
    config = yaml.safe_load((REPO / "training" / "config.yaml").read_text())["segmentation"]
    for name, n_out in (("hip_bone_seg", 3), ("tumour_seg", 2)):
        meta = json.loads((quick_models / name / "metadata.json").read_text())
        # the training recipe is recorded as trained (bf16 autocast where the config asks for it)
        assert meta["training"]["precision"] == config[name].get("precision", "fp32")
        assert meta["training"]["batch_dice"] is bool(config[name].get("batch_dice", False))
        assert meta["training"].get("hard_negatives") == config[name].get("hard_negatives")
        assert meta["training"].get("flip_augment") == config[name].get("flip_augment")
        assert meta["training"].get("edge_fraction") == config[name].get("edge_fraction")
        assert meta["sha256"] == sha256_of(quick_models / name / "model.ts")
        for key in ("version", "spacing_mm", "orientation", "intensity", "sliding_window", "architecture", "labels",
                    "training", "training_data", "intended_use", "internal_validation"):
            assert key in meta, f"{name}: {key}"
        m = load_model(quick_models, name, torch.device("cpu"))
        roi = meta["sliding_window"]["roi_size"]
        if name == "tumour_seg":  # the domain kept by post-processing: a box around the training tumours
            region = meta["sacral_region"]
            assert all(lo < hi for lo, hi in zip(region["low"], region["high"])) and region["margin"] == 0.15
        out = m.module(torch.zeros(1, 1, *roi))
        assert tuple(out.shape) == (1, n_out, *roi)


def test_classifier_and_variants_exported(quick_models: Path) -> None:
    m = load_model(quick_models, "tumour_classifier", torch.device("cpu"))
    meta = m.metadata
    spec = meta.clf
    assert spec.classes == TUMOUR_CLASSES   # the generator's one class list, written by training
    assert spec.feature_names == ("sex", "age_years", "tumour_volume_ml", "loc_u", "loc_v", "loc_w")
    assert all(f.std > 0 and f.impute is not None for f in spec.features)
    crop = torch.zeros(1, 2, *spec.crop.size)
    tab = torch.zeros(1, len(spec.features))
    assert tuple(m.module(crop, tab).shape) == (1, 6)
    assert set(spec.variants) == {"image_only", "clinical_only", "clinical_location"}
    for v in spec.variants:
        assert tuple(load_variant(m, v)(crop, tab).shape) == (1, 6)
    # the clinical-only variant really ignores the image and the location columns
    clin = load_variant(m, "clinical_only")
    t2 = tab.clone()
    t2[0, 3:] = 5.0
    assert torch.allclose(clin(crop + 1.0, tab), clin(crop, t2))
    # the image model is mirror-averaged (test-time augmentation) in the exported file, alone and in the fusion
    image = load_variant(m, "image_only")
    x = torch.rand(1, 2, *spec.crop.size)
    assert torch.allclose(image(x.flip(4), tab), image(x, tab), atol=1e-5)
    assert torch.allclose(m.module(x.flip(4), tab), m.module(x, tab), atol=1e-5)
    assert "test_time_augmentation" in (spec.variants["image_only"].architecture or {})
    import yaml
    config = yaml.safe_load((Path(__file__).resolve().parents[1] / "training" / "config.yaml").read_text())
    assert "classes" not in config["classifier"]   # the class list is the generator's, nowhere else
    training = meta.training or {}
    assert training["inputs"] == config["classifier"]["inputs"]   # what the configuration asks for
    assert training["inputs"][0] == "reference_mask"


def test_tampered_variant_is_refused(quick_models: Path, tmp_path: Path) -> None:
    import shutil

    shutil.copytree(quick_models, tmp_path / "m")
    path = tmp_path / "m" / "tumour_classifier" / "variants" / "image_only.ts"
    data = bytearray(path.read_bytes())
    data[-100] ^= 0xFF
    path.write_bytes(bytes(data))
    m = load_model(tmp_path / "m", "tumour_classifier", torch.device("cpu"))
    with pytest.raises(ModelError, match="does not match"):
        load_variant(m, "image_only")


def test_shipped_models_are_small_and_consistent() -> None:
    models = REPO / "models"
    total = sum(p.stat().st_size for p in models.rglob("*") if p.is_file())
    assert total <= 50 * 1024 * 1024
    for name in ("hip_bone_seg", "tumour_seg", "tumour_classifier"):
        meta = json.loads((models / name / "metadata.json").read_text())
        assert meta["sha256"] == sha256_of(models / name / meta["file"])
        assert "synthetic" in meta["training_data"] and "Not for clinical use" in meta["intended_use"]
    assert np.isfinite(json.loads((models / "tumour_classifier" / "metadata.json").read_text())
                       ["internal_validation"]["macro_auc"])


def test_quick_cohort_holds_studies_without_a_pelvis(quick_models: Path) -> None:
    """cohort.negatives: the quick run's cohort is the 12 phantoms plus 2 upper-abdomen studies (case ids N...),
    all prepared for training with empty label maps for hip bones and tumour."""
    work = quick_models.parent / "work"
    index = json.loads((work / "cache" / "index.json").read_text())
    neg = [e for e in index if e["case_id"].startswith("N")]
    assert len(index) == 14 and len(neg) == 2 and all(e["tumour_class"] == "none" for e in neg)
    for e in neg:
        z = np.load(work / "cache" / e["file"])
        assert not np.isin(z["hip_bone_seg_lab"], [1, 2, 3]).any() and not np.isin(z["tumour_seg_lab"], [1, 2, 3]).any()


@pytest.mark.unit
def test_hard_negative_patches_centre_on_the_normal_sacrum() -> None:
    """``hard_negatives``: that fraction of patches is centred (+/- a quarter patch) on the non-target voxels of the
    given reference labels; without it, patches centre on the target (fg_prob) or anywhere."""
    from training.train_seg import _patch
    shape, roi = (60, 80, 80), (16, 16, 16)
    lab = np.zeros(shape, np.uint8)
    lab[5:9, 5:9, 5:9] = 1                                  # the target, far from the "sacrum"
    sacrum = np.zeros(shape, bool)
    sacrum[45:50, 60:65, 60:65] = True
    hard = np.argwhere(sacrum).astype(np.int16)
    ct = np.zeros(shape, np.float32)
    ct[sacrum] = 100.0
    rng = np.random.default_rng(0)
    with_hard = [_patch(ct, lab, roi, rng, fg_prob=0.67, hard=hard, hard_fraction=0.5) for _ in range(400)]
    frac_sacrum = np.mean([(pc == 100.0).any() for pc, _ in with_hard])
    frac_target = np.mean([pl.any() for _, pl in with_hard])
    assert 0.42 < frac_sacrum < 0.62 and 0.25 < frac_target < 0.45     # 0.5 + chance; 0.5 x 0.67 + chance
    plain = [_patch(ct, lab, roi, rng, fg_prob=0.67) for _ in range(400)]
    assert np.mean([(pc == 100.0).any() for pc, _ in plain]) < 0.1


@pytest.mark.unit
def test_mirror_flips_patch_and_labels_together_along_left_right() -> None:
    """``flip_augment``: about half the patches mirrored along W (the patient's left-right on the canonical LPS
    grid), image and labels alike; nothing else moves; no names, no mirror and no random draw."""
    from training.train_seg import mirror
    img = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)
    lab = np.zeros((4, 5, 6), np.uint8)
    lab[:, :, 0] = 1                                        # the first W column
    rng = np.random.default_rng(1)
    flipped = 0
    for _ in range(200):
        mi, ml = mirror(img, lab, ("left_right",), rng)
        if ml[0, 0, 5] == 1:
            flipped += 1
            assert np.array_equal(mi, img[:, :, ::-1]) and np.array_equal(ml, lab[:, :, ::-1])
        else:
            assert np.array_equal(mi, img) and np.array_equal(ml, lab)
    assert 80 < flipped < 120
    state = rng.bit_generator.state
    mi, ml = mirror(img, lab, (), rng)
    assert np.array_equal(mi, img) and rng.bit_generator.state == state


@pytest.mark.unit
def test_edge_patches_put_the_structure_at_a_face() -> None:
    """``edge_fraction``: foreground-centred patches placed with the structure at a face, as a scan edge cuts it;
    every axis and both sides in turn; without it the structure stays off the faces (middle half of the patch)."""
    from training.train_seg import _patch
    ct = np.zeros((60, 120, 120), np.float32)
    lab = np.zeros(ct.shape, np.uint8)
    lab[29:31, 59:61, 59:61] = 1                            # a small structure in the middle of the volume
    roi = (24, 48, 48)

    def at_face(pl: np.ndarray) -> set[tuple[int, int]]:
        idx = np.argwhere(pl > 0)
        faces = set()
        for ax in range(3):
            eighth = roi[ax] // 8
            if idx[:, ax].min() < eighth:
                faces.add((ax, 0))
            if idx[:, ax].max() >= roi[ax] - eighth:
                faces.add((ax, 1))
        return faces

    rng = np.random.default_rng(3)
    edge = [_patch(ct, lab, roi, rng, fg_prob=1.0, edge_fraction=0.999)[1] for _ in range(300)]
    assert all(pl.any() and at_face(pl) for pl in edge)
    assert set().union(*(at_face(pl) for pl in edge)) == {(ax, side) for ax in range(3) for side in (0, 1)}
    rng = np.random.default_rng(3)
    plain = [_patch(ct, lab, roi, rng, fg_prob=1.0)[1] for _ in range(300)]
    assert not any(at_face(pl) for pl in plain)


@pytest.mark.unit
def test_edge_fraction_out_of_range_is_refused(tmp_path: Path) -> None:
    from core.model_metadata import ModelMetadata
    from training.train_seg import train_segmenter
    meta = ModelMetadata.from_dict(json.loads((REPO / "models" / "tumour_seg" / "metadata.json").read_text()))
    with pytest.raises(ValueError, match="edge_fraction"):
        train_segmenter(tmp_path, "tumour_seg", ["X"], meta, iterations=1, edge_fraction=1.0)


@pytest.mark.unit
def test_flip_augment_refused_for_lateral_labels(tmp_path: Path) -> None:
    """A left-right mirror would swap the hip model's left and right labels: refused before any data is read."""
    from core.model_metadata import ModelMetadata
    from training.train_seg import train_segmenter
    meta = ModelMetadata.from_dict(json.loads((REPO / "models" / "hip_bone_seg" / "metadata.json").read_text()))
    with pytest.raises(ValueError, match="lateralised"):
        train_segmenter(tmp_path, "hip_bone_seg", ["X"], meta, iterations=1, flip_augment=("left_right",))
    with pytest.raises(ValueError, match="distinct names"):
        train_segmenter(tmp_path, "hip_bone_seg", ["X"], meta, iterations=1, flip_augment=("up_down",))


@pytest.mark.unit
def test_segmented_samples_keep_the_found_tumours_in_cache_order() -> None:
    """The classifier's ``tumour_seg_mask`` samples: one per tumour case the tumour model found, with its own crop
    and tabular values and the class index; a case it missed is left out (models 0.5.0's training crashed here:
    the loop reused the name of the crop specification)."""
    from training.train_all import segmented_samples
    crops = {cid: np.full((2, 4, 4, 4), i, np.float32) for i, cid in enumerate(("A", "C"))}
    seg_inputs = {cid: (crops[cid], {"tumour_volume_ml": 10.0 + i}) for i, cid in enumerate(("A", "C"))}
    entries = [{"case_id": "A", "tumour_class": "chordoma"}, {"case_id": "B", "tumour_class": "metastasis"},
               {"case_id": "C", "tumour_class": "giant_cell_tumour"}]
    got = segmented_samples(seg_inputs, entries, list(TUMOUR_CLASSES))
    assert [(g[0], g[3]) for g in got] == [("A", TUMOUR_CLASSES.index("chordoma")),
                                           ("C", TUMOUR_CLASSES.index("giant_cell_tumour"))]
    assert got[1][1] is crops["C"] and got[1][2] == {"tumour_volume_ml": 11.0}


def test_combine_manifests_rewrites_paths_and_refuses_duplicates(tmp_path: Path) -> None:
    from training.data import combine_manifests, read_manifest
    for name, cid in (("a", "C1"), ("b", "N1")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "manifest.csv").write_text(
            f"case_id,tumour_class,dicom_dir,label_path{',extra' if name == 'b' else ''}\n"
            f"{cid},none,{cid}/dicom,{cid}/labels.nii.gz{',x' if name == 'b' else ''}\n")
    out = combine_manifests([tmp_path / "a" / "manifest.csv", tmp_path / "b" / "manifest.csv"],
                            tmp_path / "all" / "manifest.csv")
    cases = read_manifest(out)
    assert [c.case_id for c in cases] == ["C1", "N1"]
    assert [c.dicom_dir.resolve() for c in cases] == [tmp_path / "a" / "C1" / "dicom", tmp_path / "b" / "N1" / "dicom"]
    assert out.read_text().splitlines()[0] == "case_id,tumour_class,dicom_dir,label_path,extra"
    with pytest.raises(ValueError, match="more than one manifest: \\['C1'\\]"):
        combine_manifests([tmp_path / "a" / "manifest.csv"] * 2, tmp_path / "dup.csv")
