"""core.clinical: age and sex from real pydicom Datasets, volume, standardisation."""
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset

from core.clinical import FEATURE_ORDER, age_years, fit_feature_spec, sex, standardise, tumour_volume_ml
from core.model_metadata import FeatureSpec

# pydicom warns when tests set bad values
pytestmark = [pytest.mark.unit, pytest.mark.filterwarnings("ignore:Invalid value for VR")]
REAL_CT = Path(__file__).parents[2] / "shared/data/real_ct_abdomen_j2k"


def ds_with(**kw) -> Dataset:
    ds = Dataset()
    for k, v in kw.items():
        setattr(ds, k, v)
    return ds


@pytest.mark.parametrize("age, years", [
    ("057Y", 57.0), ("006M", 0.5), ("003W", 21 / 365.25), ("010D", 10 / 365.25), ("000D", 0.0), (" 57Y", 57.0),
])
def test_patient_age_forms(age, years):
    assert age_years(ds_with(PatientAge=age)) == pytest.approx(years, abs=1e-12)


def test_patient_age_wins_over_birth_date():
    ds = ds_with(PatientAge="040Y", PatientBirthDate="19700615", StudyDate="20260614")
    assert age_years(ds) == 40.0


def test_birth_date_and_study_date_arithmetic():
    ds = ds_with(PatientBirthDate="19700615", StudyDate="20260614")
    assert age_years(ds) == pytest.approx(55 + 364 / 365)   # 55.997...
    assert 55.99 < age_years(ds) < 56.0
    assert age_years(ds_with(PatientBirthDate="19700615", StudyDate="20260615")) == 56.0  # birthday
    assert age_years(ds_with(PatientBirthDate="20000229", StudyDate="20010228")) == 1.0   # leap-day birth


def test_date_fallbacks_acquisition_then_series():
    birth = "19800101"
    assert age_years(ds_with(PatientBirthDate=birth, AcquisitionDate="20200101", SeriesDate="20100101")) == 40.0
    assert age_years(ds_with(PatientBirthDate=birth, SeriesDate="20100101")) == 30.0
    assert age_years(ds_with(PatientBirthDate=birth, StudyDate="garbage", SeriesDate="20100101")) == 30.0
    assert age_years(ds_with(PatientBirthDate=birth)) is None


@pytest.mark.parametrize("kw", [
    {}, {"PatientAge": ""}, {"PatientAge": "57"}, {"PatientAge": "ABCY"}, {"PatientAge": "057X"},
    {"PatientAge": "999Y"}, {"PatientBirthDate": "19701340", "StudyDate": "20260101"},
    {"PatientBirthDate": "", "StudyDate": "20260101"}, {"PatientBirthDate": "20300101", "StudyDate": "20260101"},
    {"PatientBirthDate": "1970", "StudyDate": "20260101"},
])
def test_malformed_age_is_none(kw):
    assert age_years(ds_with(**kw)) is None


def test_malformed_age_falls_back_to_dates():
    assert age_years(ds_with(PatientAge="57", PatientBirthDate="19700101", StudyDate="20200101")) == 50.0


def test_placeholder_000Y_falls_back_to_dates():
    assert age_years(ds_with(PatientAge="000Y", PatientBirthDate="19700101", StudyDate="20200101")) == 50.0
    assert age_years(ds_with(PatientAge="000Y")) is None


def test_real_files_read_from_disk():
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))  # PatientAge '000Y', PatientSex 'O', no birth date
    assert age_years(ds) is None and sex(ds) is None
    files = sorted(REAL_CT.glob("*"))
    if not files:
        pytest.skip("shared real CT not present")
    ds = pydicom.dcmread(files[0], stop_before_pixels=True)  # anonymised: empty age, sex, birth date
    assert age_years(ds) is None and sex(ds) is None
    ds.PatientSex, ds.PatientAge = "F", "063Y"
    assert age_years(ds) == 63.0 and sex(ds) == "F"


def test_age_never_raises_on_non_dataset():
    assert age_years(object()) is None and sex(object()) is None


@pytest.mark.parametrize("value, expected", [("M", "M"), ("F", "F"), ("F ", "F"), ("O", None), ("", None),
                                             ("X", None), ("MALE", None)])
def test_sex(value, expected):
    assert sex(ds_with(PatientSex=value)) == expected


def test_sex_missing():
    assert sex(Dataset()) is None


def test_tumour_volume_ml():
    mask = np.zeros((4, 5, 6), bool)
    mask[1:3, 1:4, 2:4] = True  # 12 voxels
    assert tumour_volume_ml(mask, 0.012) == pytest.approx(0.144)
    assert tumour_volume_ml(mask.astype(np.uint8), 0.5) == 6.0
    with pytest.raises(ValueError):
        tumour_volume_ml(mask.astype(np.uint8) * 3, 0.5)  # a label map, not a mask
    with pytest.raises(ValueError):
        tumour_volume_ml(mask, 0.0)


SPEC = [
    FeatureSpec(name="sex", encoding="M=1,F=0", mean=0.6, std=0.5, impute=0.6),
    FeatureSpec(name="age_years", mean=50.0, std=15.0, impute=50.0),
    FeatureSpec(name="tumour_volume_ml", mean=200.0, std=100.0, impute=200.0),
    FeatureSpec(name="loc_u", mean=0.0, std=0.1, impute=0.0),
    FeatureSpec(name="loc_v", mean=0.4, std=0.2, impute=0.4),
    FeatureSpec(name="loc_w", mean=0.1, std=0.3, impute=0.1),
]


def test_standardise_reproduces_zscore():
    values = {"sex": "M", "age_years": 65.0, "tumour_volume_ml": 50.0, "loc_u": 0.05, "loc_v": 0.0,
              "loc_w": 0.7, "unused": 1.0}
    x, imputed = standardise(values, SPEC)
    assert x.dtype == np.float32 and imputed == []
    np.testing.assert_allclose(x, [(1 - 0.6) / 0.5, 1.0, -1.5, 0.5, -2.0, 2.0], rtol=1e-6)
    x_f, _ = standardise({**values, "sex": "F"}, SPEC)
    assert x_f[0] == pytest.approx(-1.2)


def test_standardise_imputes_and_reports():
    x, imputed = standardise({"sex": None, "age_years": float("nan"), "tumour_volume_ml": 300.0,
                              "loc_u": 0.1, "loc_v": 0.4}, SPEC)
    assert imputed == ["sex", "age_years", "loc_w"]
    np.testing.assert_allclose(x, [0.0, 0.0, 1.0, 1.0, 0.0, 0.0], atol=1e-6)
    spec = [replace(SPEC[1], impute=35.0)]  # impute need not be the mean
    x, imputed = standardise({}, spec)
    assert x[0] == pytest.approx(-1.0) and imputed == ["age_years"]


def test_standardise_follows_spec_order():
    spec = [SPEC[3], SPEC[1]]
    x, _ = standardise({"age_years": 80.0, "loc_u": -0.2}, spec)
    np.testing.assert_allclose(x, [-2.0, 2.0], rtol=1e-6)


def test_standardise_errors():
    with pytest.raises(ValueError, match="no 'impute'"):
        standardise({}, [FeatureSpec(name="age_years", mean=50.0, std=15.0)])
    with pytest.raises(ValueError, match="std > 0"):   # checked when the spec is built (from metadata or by hand)
        FeatureSpec(name="age_years", mean=50.0, std=0.0, impute=50.0)
    with pytest.raises(ValueError, match=r"^features\[0\]\.std: .*std > 0"):
        FeatureSpec.from_dict({"name": "age_years", "mean": 50.0, "std": 0.0, "impute": 50.0}, "features[0]")
    with pytest.raises(ValueError, match="not in encoding"):
        standardise({"sex": "O"}, SPEC[:1])


def test_fit_feature_spec_then_standardise_round_trip():
    table = {
        "sex": ["M", "F", "M", None],
        "age_years": [40.0, 60.0, None, 50.0],
        "tumour_volume_ml": [100.0, 300.0, 200.0, 200.0],
        "loc_u": [0.1, 0.1, 0.1, 0.1],              # constant: std replaced by 1.0
        "loc_v": [0.0, 0.2, 0.4, float("nan")],
        "loc_w": [1.0, 2.0, 3.0, 4.0],
    }
    spec = fit_feature_spec(table)
    assert [f.name for f in spec] == list(FEATURE_ORDER)
    by = {f.name: f for f in spec}
    assert by["sex"].encoding == "M=1,F=0" and by["sex"].mean == pytest.approx(2 / 3)
    assert by["age_years"].mean == 50.0 and by["age_years"].std == pytest.approx(math.sqrt(200 / 3))
    assert by["age_years"].n == 3 and by["age_years"].impute == 50.0
    assert by["loc_u"].std == 1.0
    assert by["loc_w"].std == pytest.approx(np.std([1, 2, 3, 4]))
    rows = [{k: table[k][i] for k in table} for i in range(4)]
    z = np.stack([standardise(r, spec)[0] for r in rows])
    # the training rows come out z-scored: mean 0 over each observed column
    np.testing.assert_allclose(z[:, 2].mean(), 0.0, atol=1e-6)
    np.testing.assert_allclose(z[:, 2].std(), 1.0, atol=1e-6)
    np.testing.assert_allclose(z[:, 3], 0.0, atol=1e-6)
    assert standardise(rows[3], spec)[1] == ["sex", "loc_v"]
    with pytest.raises(ValueError):
        fit_feature_spec({"age_years": [None, None]}, ["age_years"])
