"""Drawing a synthetic patient: demographics, pelvic shape and pose, bone, implants, body and normal findings.

Distributions (sources where the literature gives them, otherwise plausible ranges stated here):
- pelvic shape: female pelves are wider (inlet, subpubic angle) and lower than male ones; pelvic tilt varies by
  about +/-15 degrees between supine patients, obliquity (yaw) and bony roll by a few degrees;
- lumbosacral transitional vertebrae (Castellvi types) in about 10 % of people (Apazidis et al., Spine J 2011);
- hip arthroplasty in about 2-5 % of people over 60 and rising with age; lumbosacral fixation in about 2 %;
- phleboliths in most adults over 40, more with age; iliac arterial calcification rising steeply after 50.
"""
from __future__ import annotations

import datetime as _dt
import math

import numpy as np

from training.phantom.draws import clip, random_unit
from training.phantom import appearance
from training.phantom.anatomy import sacrum_geometry
from training.phantom.params import (
    CLASS_PREVALENCE,
    NO_TUMOUR,
    TUMOUR_CLASSES,
    Body,
    Implants,
    PatientParams,
    PelvisShape,
)
from training.phantom.tumour import check_world, sample_demographics, sample_tumour


def sample_shape(rng: np.random.Generator, sex: str) -> PelvisShape:
    """Pelvic shape and pose of one patient."""
    female = sex == "F"
    u = rng.random()
    lumbosacral = ("transitional_left" if u < 0.03 else "transitional_right" if u < 0.06
                   else "transitional_both" if u < 0.09 else "normal")
    return PelvisShape(
        width=clip(rng.normal(1.05 if female else 0.98, 0.04), 0.88, 1.16),
        depth=clip(rng.normal(1.0, 0.05), 0.88, 1.14),
        height=clip(rng.normal(0.95 if female else 1.0, 0.04), 0.85, 1.1),
        subpubic=clip(rng.normal(0.10 if female else 0.0, 0.03), -0.05, 0.18),
        asymmetry=clip(rng.normal(0.0, 0.025), -0.07, 0.07),
        tilt_deg=clip(rng.normal(0.0, 7.0), -15.0, 15.0),
        yaw_deg=clip(rng.normal(0.0, 3.0), -8.0, 8.0),
        roll_deg=clip(rng.normal(0.0, 3.0), -8.0, 8.0),
        deform_mm=float(rng.uniform(2.0, 6.0)), deform_seed=int(rng.integers(0, 2**31)),
        lumbosacral=lumbosacral, l5s1_disc_mm=float(rng.uniform(3.0, 12.0)),
        femoral_head_mm=clip(rng.normal(23.5 if not female else 21.0, 1.3), 17.0, 27.0),
    )


def sample_implants(rng: np.random.Generator, age: int) -> Implants:
    """Hip prostheses and spinal fixation (more frequent with age; enriched so that training sees them)."""
    p_hip = 0.03 + 0.12 * clip((age - 50) / 30.0, 0.0, 1.0)
    u = rng.random()
    hip = "none"
    if u < p_hip:
        v = rng.random()
        hip = "left" if v < 0.4 else "right" if v < 0.8 else "both"
    return Implants(hip_prosthesis=hip, spinal_rods=bool(rng.random() < 0.04),
                    metal_hu=float(rng.uniform(2500.0, 3071.0)))


def sample_body(rng: np.random.Generator, sex: str, age: int) -> Body:
    """Soft tissue, organs and normal findings (the tumour model's distractors)."""
    old = clip((age - 40) / 40.0, 0.0, 1.0)
    obese = clip(rng.beta(2.0, 4.0) * 1.5, 0.0, 1.0)
    fat = clip(rng.lognormal(math.log(16.0 if sex == "M" else 24.0), 0.35) * (0.6 + obese), 4.0, 95.0)
    bowel = []
    for _ in range(int(rng.integers(5, 14))):
        p0 = np.array([rng.uniform(-95, 95), rng.uniform(-85, 10), rng.uniform(-10, 260)])
        p1 = p0 + random_unit(rng) * rng.uniform(15, 60)
        p1[2] = max(p1[2], -20.0)
        gas = float(rng.choice([0.0, 0.0, 0.3, 0.6, 1.0]))
        stool = float(rng.choice([0.0, 0.0, 0.5, 1.0]))
        bowel.append((*map(float, p0), *map(float, p1), float(rng.uniform(9, 22)), gas, stool))
    phleb = []
    for _ in range(int(rng.poisson(0.5 + 5.0 * old))):
        s = 1 if rng.random() < 0.5 else -1
        phleb.append((s * rng.uniform(35, 70), rng.uniform(-25, 30), rng.uniform(-90, -30), rng.uniform(1.2, 3.0),
                      rng.uniform(250, 900)))
    nodes = []
    for _ in range(int(rng.integers(0, 7))):
        s = 1 if rng.random() < 0.5 else -1
        nodes.append((s * rng.uniform(40, 80), rng.uniform(-45, 20), rng.uniform(-70, 90), rng.uniform(3.0, 7.5)))
    return Body(
        fat_mm=fat, body_width=clip(rng.normal(1.0, 0.05), 0.88, 1.14), visceral_fat=obese,
        muscle_hu=float(rng.uniform(38.0, 60.0)), fat_hu=float(rng.uniform(-115.0, -85.0)),
        arms="down" if rng.random() < 0.3 else "up", bladder_fill=clip(rng.uniform(0.2, 1.4), 0.2, 1.4),
        bowel=tuple(bowel), rectal_gas=float(rng.uniform(0.0, 0.7)), rectal_stool=float(rng.uniform(0.0, 1.0)),
        phleboliths=tuple(tuple(float(v) for v in x) for x in phleb),
        vascular_calcification=clip(rng.normal(old ** 2, 0.15), 0.0, 1.0) if age > 40 else 0.0,
        lymph_nodes=tuple(tuple(float(v) for v in x) for x in nodes), organ_seed=int(rng.integers(0, 2**31)),
    )


def sample_patient(rng: np.random.Generator, case_id: str, tumour_class: str | None = None,
                   tumour_world: str = "v1") -> PatientParams:
    """Draw a synthetic patient.

    Args:
        rng: source of randomness (the only one used: same state -> same patient).
        case_id: identifier used for synthetic names/IDs (e.g. ``"C0001"``).
        tumour_class: one of :data:`TUMOUR_CLASSES`, ``"none"``, or None to draw a tumour class by
            :data:`CLASS_PREVALENCE`.
        tumour_world: "v1" (default, :mod:`training.phantom.tumour`) or "v2" (:mod:`training.phantom.tumour_v2`);
            v1 draws exactly what it always drew from the same ``rng`` state.
    """
    check_world(tumour_world)
    if tumour_class is None:
        names = list(CLASS_PREVALENCE)
        pr = np.array([CLASS_PREVALENCE[k] for k in names])
        tumour_class = str(rng.choice(names, p=pr / pr.sum()))
    if tumour_class not in TUMOUR_CLASSES and tumour_class != NO_TUMOUR:
        raise ValueError(f"unknown tumour class {tumour_class!r}; expected one of {TUMOUR_CLASSES} or 'none'")
    if tumour_world == "v2":
        from training.phantom import tumour_v2
        age, sex = tumour_v2.sample_demographics(rng, tumour_class)
    else:
        age, sex = sample_demographics(rng, tumour_class)
    scale = rng.normal(1.03 if sex == "M" else 0.96, 0.05)
    if age < 16:
        scale -= 0.012 * (16 - age)
    scale = clip(scale, 0.85, 1.2)
    shape = sample_shape(rng, sex)
    bone = appearance.sample_bone(rng, age, sex)
    implants = sample_implants(rng, age)
    body = sample_body(rng, sex, age)
    p = PatientParams(case_id=case_id, age=age, sex=sex, tumour_class=tumour_class, scale=float(scale),
                      shape=shape, bone=bone, implants=implants, body=body)
    tumour = None
    if tumour_class != NO_TUMOUR:
        if tumour_world == "v2":
            tumour = tumour_v2.sample_tumour(rng, tumour_class, sacrum_geometry(p), scale, age=age, sex=sex)
        else:
            tumour = sample_tumour(rng, tumour_class, sacrum_geometry(p), scale)

    study = _dt.date(2012, 1, 1) + _dt.timedelta(days=int(rng.integers(0, 12 * 365)))
    try:
        anniv = study.replace(year=study.year - age)
    except ValueError:  # 29 February
        anniv = study.replace(year=study.year - age, day=28)
    birth = anniv - _dt.timedelta(days=int(rng.integers(0, 365)))
    hh, mm, ss = int(rng.integers(7, 20)), int(rng.integers(0, 60)), int(rng.integers(0, 60))
    from dataclasses import replace
    return replace(
        p, tumour=tumour,
        patient_name=f"PHANTOM^{case_id}", patient_id=f"PH{case_id}", birth_date=birth.strftime("%Y%m%d"),
        study_date=study.strftime("%Y%m%d"), study_time=f"{hh:02d}{mm:02d}{ss:02d}",
        accession_number=f"A{int(rng.integers(0, 10**8)):08d}", uid_seed=f"{int(rng.integers(0, 2**62)):x}",
    )
