"""Unusual inputs for ``test_robustness.py`` and ``test_privacy.py``, each run once through the real application.

Every case is built under one session temp folder and run ONCE per pytest session with the command line of
``conftest.run_app`` (``python -m app -i IN -o OUT -m MODELS``) plus ``-l DEBUG``, with ``TMPDIR`` pointing at a
fresh folder per case and ``HOME`` at a session folder. When ``strace`` is installed the run is traced
(``--seccomp-bpf``: only file-creating system calls stop) so that the privacy suite can list every file the
application created or opened for writing. Both suites read the same runs: robustness asserts the behaviour,
privacy asserts that no identifier leaked and that nothing outside the output and temp folders changed.

All generated studies carry the recognisable identifiers of :data:`IDENT` (file names stay neutral).
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
import subprocess
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from collections.abc import Callable

import numpy as np
import pydicom
import yaml
from conftest import MODELS, REPO, AppRun
from dicom_factory import (
    corrupt_header, truncate, write_ct_series, write_junk, write_localizer, write_mr_series, write_non_image,
)
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    EncapsulatedPDFStorage, EnhancedCTImageStorage, ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian,
    JPEG2000Lossless, generate_uid,
)

from app.launch import app_command, threads_per_run

# --------------------------------------------------------------------------------------------- identifiers
IDENT = {"patient_name": "Zebedee^Quixotic", "patient_id": "PID-7731-XQ", "birth_date": "19580316",
         "accession_number": "ACC-99417-ZZ"}
NON_ASCII_NAME = "Zébédée^Quixotić"
#: strings that must never appear outside the DICOM outputs (compared case-insensitively)
SECRETS = ("Zebedee", "Quixotic", "Zébédée", "Quixotić", "PID-7731-XQ", "7731-XQ", "ACC-99417-ZZ", "99417-ZZ",
           "19580316", "1958-03-16", "16.03.1958", "03/16/1958", "1958/03/16")
MALFORMED = {"PatientAge": "5OY", "PatientBirthDate": "19581316", "PatientSex": "X", "StudyDate": "2020-02-30"}

STRACE = shutil.which("strace")
TRACED_CALLS = "open,openat,creat,mkdir,mkdirat,rename,renameat,renameat2,link,linkat,symlink,symlinkat,truncate"


def stamp_identifiers(folder: Path, name: str = IDENT["patient_name"], charset: str = "ISO_IR 100") -> None:
    """Rewrite every DICOM file under ``folder`` with the recognisable identifiers of :data:`IDENT`."""
    for p in sorted(x for x in folder.rglob("*") if x.is_file()):
        try:
            ds = pydicom.dcmread(p)
        except Exception:
            continue
        ds.SpecificCharacterSet = charset
        ds.PatientName = name
        ds.PatientID = IDENT["patient_id"]
        ds.PatientBirthDate = IDENT["birth_date"]
        ds.AccessionNumber = IDENT["accession_number"]
        ds.save_as(p, enforce_file_format=True)


# ------------------------------------------------------------------------------------------------ studies
@dataclass
class Study:
    dicom_dir: Path
    study_uid: str
    series_uid: str
    n_slices: int


def phantom_study(out: Path, *, seed: int, tumour_class: str = "chordoma", matrix: int = 64, spacing: float = 3.0,
                  thickness: float | None = None, kernel: str = "STANDARD", contrast: bool = False,
                  series_number: int = 2, z_range: tuple[float, float] | None = None,
                  recon_centre: Callable[[Any, Any], tuple[float, float]] | None = None,
                  localizer: bool = False) -> Study:
    """One generated phantom series (``training.phantom``) with :data:`IDENT`, written to ``out/<case>/dicom``."""
    from training.phantom import render, sample_patient, sample_scan, write_case

    rng = np.random.default_rng(seed)
    patient = replace(sample_patient(rng, f"S{seed % 10000:04d}", tumour_class), **IDENT)
    scan = sample_scan(rng, patient).with_matrix(matrix)
    scan = replace(scan, slice_spacing_mm=spacing, slice_thickness_mm=thickness or spacing, kernel=kernel,
                   contrast=contrast, series_number=series_number,
                   series_description=f"PELVIS {thickness or spacing:g}mm {'CONTRAST' if contrast else 'NONCONTRAST'}")
    if z_range is not None:
        scan = replace(scan, z_range_mm=z_range)
    if recon_centre is not None:
        scan = replace(scan, recon_centre_mm=recon_centre(patient, scan))
    ct, labels = render(patient, scan)
    row = write_case(patient, scan, ct, labels, out, localizer=localizer)
    return Study(out / row["dicom_dir"], row["study_instance_uid"], row["series_instance_uid"], int(row["n_slices"]))


def sha_tree(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root`` (relative path -> hex); also records modes of folders."""
    out: dict[str, str] = {}
    if not root.exists():
        return out
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_file():
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
        elif p.is_dir():
            out[rel + "/"] = oct(p.stat().st_mode)
    return out


def _copy_files(src: Path, dst: Path) -> list[Path]:
    dst.mkdir(parents=True, exist_ok=True)
    out = []
    for p in sorted(src.iterdir()):
        shutil.copyfile(p, dst / p.name)
        out.append(dst / p.name)
    return out


def _rewrite(path: Path, dst: Path, edit: Callable[[Dataset, int], None], k: int) -> None:
    ds = pydicom.dcmread(path)
    edit(ds, k)
    fresh = Dataset()  # no memory of the original encoding: may be written in another transfer syntax
    fresh.update(ds)
    fresh.file_meta = ds.file_meta
    dst.parent.mkdir(parents=True, exist_ok=True)
    fresh.save_as(dst, enforce_file_format=True)


def _ct_slices(folder: Path) -> list[Path]:
    return sorted(folder.glob("CT*.dcm"))


# ----------------------------------------------------------------------------------------------- running
@dataclass
class CaseRun:
    """One finished case: the app run plus what the privacy suite needs."""

    name: str
    run: AppRun
    input_dir: Path | None
    tmpdir: Path
    home: Path
    inputs_before: dict[str, str]
    inputs_after: dict[str, str]
    trace: list[str] | None            # paths created or opened for writing (None without strace)
    secrets: tuple[str, ...]
    expect: dict[str, Any] = field(default_factory=dict)

    @property
    def result(self) -> dict[str, Any]:
        return self.run.result

    @property
    def has_result(self) -> bool:
        return (self.run.output_dir / "result.json").is_file()


@dataclass
class CaseSpec:
    input_dir: Path | None
    output_dir: Path
    models: Path = MODELS
    args: tuple[str, ...] = ()
    secrets: tuple[str, ...] = SECRETS
    expect: dict[str, Any] = field(default_factory=dict)
    before: Callable[[], None] | None = None      # e.g. mount a tmpfs
    after: Callable[[], None] | None = None       # e.g. list and unmount it


_WRITE_FLAGS = re.compile(r"O_WRONLY|O_RDWR|O_CREAT|O_TRUNC|O_APPEND")
_CALL = re.compile(r'^\d+\s+(\w+)\((.*)$')


def parse_trace(path: Path, cwd: Path) -> list[str]:
    """Paths that a traced process created, renamed to, or opened for writing (successfully or pending)."""
    out: list[str] = []
    if not path.is_file():
        return out
    for line in path.read_text(errors="replace").splitlines():
        m = _CALL.match(line)
        if not m:
            continue
        call, rest = m.groups()
        if re.search(r"= -1 E", rest):
            continue
        paths = re.findall(r'"((?:[^"\\]|\\.)*)"', rest)
        if not paths:
            continue
        if call in ("open", "openat", "creat"):
            if call != "creat" and not _WRITE_FLAGS.search(rest):
                continue
            target = paths[0]
            if call == "openat" and not rest.startswith("AT_FDCWD") and not target.startswith("/"):
                target = f"<relative to a dirfd>/{target}"
        elif call in ("mkdir", "mkdirat", "truncate"):
            target = paths[0]
        else:  # rename*, link*, symlink*: the new name
            target = paths[-1]
        if not target.startswith("/") and not target.startswith("<"):
            target = str(cwd / target)
        out.append(target)
    return out


class Cases:
    """Builds and runs the cases lazily, once per session (a process-wide singleton)."""

    _instance: Cases | None = None
    _lock = threading.Lock()

    def __init__(self, root: Path) -> None:
        self.root = root
        self.home = root / "home"
        self.home.mkdir(parents=True, exist_ok=True)
        self.runs: dict[str, CaseRun] = {}
        self._studies: dict[str, Study] = {}

    @classmethod
    def get(cls, tmp_path_factory: Any) -> Cases:
        with cls._lock:
            if cls._instance is None:
                cls._instance = Cases(tmp_path_factory.mktemp("robust"))
            return cls._instance

    # -------------------------------------------------------------------------------------- studies
    def study(self, key: str) -> Study:
        """Shared generated studies: 'ref' (64 x 64, chordoma), 'other' (another patient), 'pelvis128'."""
        if key not in self._studies:
            base = self.root / "studies" / key
            if key == "ref":
                self._studies[key] = phantom_study(base, seed=2024_11, tumour_class="chordoma")
            elif key == "other":
                self._studies[key] = phantom_study(base, seed=3030_7, tumour_class="none", spacing=2.5)
            else:
                raise KeyError(key)
        return self._studies[key]

    # ----------------------------------------------------------------------------------------- runs
    def run(self, name: str) -> CaseRun:
        """The run of case ``name``. A case of :data:`GROUPS` runs with its group (one shared TMPDIR); any other
        case runs beside the next case not yet run, preferably one of the same cost (:data:`LIGHT`), each with its
        own TMPDIR, so that the two cores of a small machine both work: the runs are independent
        (``good_concurrent`` asserts that two runs at once give the findings of one alone)."""
        if name not in self.runs:
            if name in GROUPS:
                self._run_together(GROUPS[name], share_tmp=True)
            else:
                free = [n for n in ALL_CASES if n != name and n not in self.runs and n not in GROUPS]
                # a partner of the same cost, so that neither core waits long for the other
                partner = next((n for n in free if (n in LIGHT) == (name in LIGHT)), free[0] if free else None)
                self._run_together((name,) if partner is None else (name, partner), share_tmp=False)
        return self.runs[name]

    def _run_together(self, names: tuple[str, ...], *, share_tmp: bool) -> None:
        specs = {n: BUILDERS[n](self, self.root / "cases" / n) for n in names}
        procs = {}
        shared_tmp = self.root / "cases" / ("tmp-" + "+".join(names))  # a group started together shares TMPDIR
        for n, spec in specs.items():
            case_dir = self.root / "cases" / n
            case_dir.mkdir(parents=True, exist_ok=True)
            tmpdir = shared_tmp if share_tmp else case_dir / "tmp"
            tmpdir.mkdir(parents=True, exist_ok=True)
            if spec.before:
                spec.before()
            before = sha_tree(spec.input_dir) if spec.input_dir else {}
            cmd = app_command(spec.input_dir or case_dir / "absent", spec.output_dir, spec.models, "-l", "DEBUG",
                              *spec.args)
            trace = case_dir / "strace.log"
            if STRACE:
                cmd = [STRACE, "-f", "--seccomp-bpf", "-qq", "-e", f"trace={TRACED_CALLS}", "-e", "signal=none",
                       "-o", str(trace), *cmd]
            env = {**os.environ, "PYTHONUNBUFFERED": "1", "TMPDIR": str(tmpdir), "HOME": str(self.home),
                   **threads_per_run(len(names))}
            procs[n] = (subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                         text=True), spec, tmpdir, before, trace)
        for n, (proc, spec, tmpdir, before, trace) in procs.items():
            try:
                out, err = proc.communicate(timeout=1200)
                after = sha_tree(spec.input_dir) if spec.input_dir else {}
                run = AppRun(proc.returncode, out, err, spec.output_dir)
                if spec.after:
                    spec.after()
            except BaseException:
                proc.kill()
                raise
            self.runs[n] = CaseRun(n, run, spec.input_dir, tmpdir, self.home, before, after,
                                   parse_trace(trace, REPO) if STRACE else None, spec.secrets, spec.expect)


# --------------------------------------------------------------------------------------------- builders
BUILDERS: dict[str, Callable[[Cases, Path], CaseSpec]] = {}
#: cases started at the same time (the concurrency case)
GROUPS: dict[str, tuple[str, ...]] = {}


def case(name: str) -> Callable:
    def deco(fn: Callable[[Cases, Path], CaseSpec]) -> Callable[[Cases, Path], CaseSpec]:
        BUILDERS[name] = fn
        return fn
    return deco


def small_ct(folder: Path, **kw: Any) -> Any:
    """A 32 x 32 x 24 dicom_factory series (models are not reached) with :data:`IDENT`."""
    w = write_ct_series(folder, **kw)
    stamp_identifiers(folder)
    return w


@case("good")
def _good(c: Cases, d: Path) -> CaseSpec:
    s = c.study("ref")
    return CaseSpec(s.dicom_dir, d / "out", expect={"study": s})


@case("file_order")
def _file_order(c: Cases, d: Path) -> CaseSpec:
    """Random file names in nested folders, InstanceNumber from head to feet, two slices exported twice."""
    s = c.study("ref")
    rnd = random.Random(11)
    files = _ct_slices(s.dicom_dir)
    n = len(files)

    def reverse_number(ds: Dataset, k: int) -> None:
        ds.InstanceNumber = n - k

    names = []
    for k, p in enumerate(files):
        sub = "/".join(f"{rnd.getrandbits(16):04x}" for _ in range(rnd.randint(0, 3)))
        dst = d / "in" / sub / f"{rnd.getrandbits(48):012x}"
        _rewrite(p, dst, reverse_number, k)
        names.append(dst)
    for k in (n // 3, 2 * n // 3):  # the same instance exported twice, under another name
        shutil.copyfile(names[k], d / "in" / f"{rnd.getrandbits(48):012x}")
    return CaseSpec(d / "in", d / "out", expect={"study": s, "duplicates": 2})


@case("bad_files")
def _bad_files(c: Cases, d: Path) -> CaseSpec:
    """The good series plus a truncated and a corrupted copy of slices, a bare preamble and non-DICOM junk."""
    s = c.study("ref")
    _copy_files(s.dicom_dir, d / "in")
    bad = d / "in" / "extra"
    bad.mkdir()
    files = _ct_slices(s.dicom_dir)
    shutil.copyfile(files[5], bad / "cut.dcm")
    truncate(bad / "cut.dcm", 0.6)
    shutil.copyfile(files[6], bad / "garbled.dcm")
    corrupt_header(bad / "garbled.dcm")
    (bad / "preamble_only.dcm").write_bytes(bytes(128) + b"DICM")
    write_junk(d / "in" / "junk")
    return CaseSpec(d / "in", d / "out", expect={"study": s, "bad": ["extra/cut.dcm", "extra/garbled.dcm",
                                                                     "extra/preamble_only.dcm"]})


def _encode_variant(ds: Dataset, k: int) -> None:
    """Re-encode slice ``k`` with the same HU in one of six ways (transfer syntax, signedness, rescale)."""
    hu = ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    kind = k % 6
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    if kind == 0:    # unchanged: explicit VR little endian, unsigned, intercept -1024
        return
    if kind == 1:    # explicit VR big endian
        stored = (hu + 1024).astype(np.uint16)
        ds.file_meta.TransferSyntaxUID = ExplicitVRBigEndian
        ds.PixelData = stored.astype(">u2").tobytes()
        ds["PixelData"].VR = "OW"
    elif kind == 2:  # JPEG 2000 lossless
        ds.compress(JPEG2000Lossless, (hu + 1024).astype(np.uint16), generate_instance_uid=False)
    elif kind == 3:  # PixelRepresentation 1 (signed), intercept 0
        ds.PixelRepresentation = 1
        ds.RescaleIntercept = 0
        ds.PixelData = hu.astype("<i2").tobytes()
    elif kind == 4:  # unusual rescale: slope 0.5, intercept -1024
        ds.RescaleSlope = "0.5"
        ds.PixelData = ((hu + 1024) * 2).astype("<u2").tobytes()
    else:            # implicit VR little endian, signed, intercept -1000
        ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
        ds.PixelRepresentation = 1
        ds.RescaleIntercept = -1000
        ds.PixelData = (hu + 1000).astype("<i2").tobytes()


@case("storage")
def _storage(c: Cases, d: Path) -> CaseSpec:
    s = c.study("ref")
    for k, p in enumerate(_ct_slices(s.dicom_dir)):
        _rewrite(p, d / "in" / p.name, _encode_variant, k)
    return CaseSpec(d / "in", d / "out", expect={"study": s})


@case("series_choice")
def _series_choice(c: Cases, d: Path) -> CaseSpec:
    """One study, five series: localizer; noncontrast soft 2 mm (expected); soft 5 mm; bone kernel 2 mm;
    contrast-enhanced soft 2 mm."""
    seed = 5150
    win = phantom_study(d / "s2", seed=seed, spacing=2.0, series_number=2, localizer=True)
    thick = phantom_study(d / "s3", seed=seed, spacing=5.0, series_number=3)
    bone = phantom_study(d / "s4", seed=seed, spacing=2.0, kernel="BONE", series_number=4)
    ce = phantom_study(d / "s5", seed=seed, spacing=2.0, contrast=True, series_number=5)
    assert len({win.study_uid, thick.study_uid, bone.study_uid, ce.study_uid}) == 1
    for i, st in enumerate((win, thick, bone, ce)):
        _copy_files(st.dicom_dir, d / "in" / f"export{i}")
    return CaseSpec(d / "in", d / "out", expect={"selected": win.series_uid,
                                                 "others": [thick.series_uid, bone.series_uid, ce.series_uid]})


@case("two_studies")
def _two_studies(c: Cases, d: Path) -> CaseSpec:
    """The reference study (3 mm) and another patient's study (2.5 mm: ranks first) in one folder."""
    ref, other = c.study("ref"), c.study("other")
    _copy_files(ref.dicom_dir, d / "in" / "a")
    _copy_files(other.dicom_dir, d / "in" / "b")
    return CaseSpec(d / "in", d / "out", expect={"selected": other.series_uid, "study": other.study_uid})


def _header_variant(c: Cases, d: Path, edit: Callable[[Dataset, int], None], secrets: tuple[str, ...]) -> CaseSpec:
    s = c.study("ref")
    for k, p in enumerate(_ct_slices(s.dicom_dir)):
        _rewrite(p, d / "in" / p.name, edit, k)
    return CaseSpec(d / "in", d / "out", secrets=secrets, expect={"study": s})


@case("clinical_missing_non_ascii")
def _clinical_missing(c: Cases, d: Path) -> CaseSpec:
    """No age, birth date, sex or dates; a patient name outside Latin-1 (UTF-8)."""
    def edit(ds: Dataset, k: int) -> None:
        for kw in ("PatientAge", "PatientBirthDate", "PatientSex", "StudyDate", "SeriesDate", "AcquisitionDate",
                   "ContentDate"):
            if kw in ds:
                delattr(ds, kw)
        ds.SpecificCharacterSet = "ISO_IR 192"
        ds.PatientName = NON_ASCII_NAME
    return _header_variant(c, d, edit, SECRETS)


@case("clinical_malformed")
def _clinical_malformed(c: Cases, d: Path) -> CaseSpec:
    def edit(ds: Dataset, k: int) -> None:
        for kw, v in MALFORMED.items():
            setattr(ds, kw, v)
    return _header_variant(c, d, edit, SECRETS + (MALFORMED["PatientBirthDate"],))



@case("thighs_only")
def _thighs(c: Cases, d: Path) -> CaseSpec:
    """A phantom scan from 15 cm below the ischium downwards: femurs and thighs, no hip bone."""
    s = phantom_study(d / "study", seed=2024_11, matrix=128, z_range=(-360.0, -150.0))
    return CaseSpec(s.dicom_dir, d / "out")


@case("hip_cut")
def _hip_cut(c: Cases, d: Path) -> CaseSpec:
    """Coverage ends 40 mm above the pelvis origin: the iliac crests (about +89 mm) are cut off."""
    s = phantom_study(d / "study", seed=2024_11, matrix=128, z_range=(-140.0, 40.0))
    return CaseSpec(s.dicom_dir, d / "out")


@case("tumour_at_edge")
def _tumour_edge(c: Cases, d: Path) -> CaseSpec:
    """The posterior edge of the field of view runs through the tumour's centre."""
    def centre(patient: Any, scan: Any) -> tuple[float, float]:
        t = patient.local_to_lps(scan, np.asarray(patient.tumour_centre_mm))[0]
        half = (scan.matrix - 1) / 2.0 * scan.pixel_spacing_mm
        return (0.0, float(t[1] - half))
    s = phantom_study(d / "study", seed=2024_11, matrix=128, recon_centre=centre)
    return CaseSpec(s.dicom_dir, d / "out")


@case("pelvis_without_tumour")
def _no_tumour(c: Cases, d: Path) -> CaseSpec:
    s = phantom_study(d / "study", seed=777_1, tumour_class="none", matrix=128)
    return CaseSpec(s.dicom_dir, d / "out", expect={"study": s})


@case("good_concurrent")
def _good_concurrent(c: Cases, d: Path) -> CaseSpec:
    s = c.study("ref")
    return CaseSpec(s.dicom_dir, d / "out", expect={"study": s})


GROUPS["pelvis_without_tumour"] = GROUPS["good_concurrent"] = ("good_concurrent", "pelvis_without_tumour")


# ------------------------------------------------------------------------------------- refused inputs
@case("empty")
def _empty(c: Cases, d: Path) -> CaseSpec:
    (d / "in").mkdir(parents=True)
    return CaseSpec(d / "in", d / "out")


@case("missing_input")
def _missing(c: Cases, d: Path) -> CaseSpec:
    d.mkdir(parents=True, exist_ok=True)
    return CaseSpec(d / "does_not_exist", d / "out")


@case("no_dicom")
def _no_dicom(c: Cases, d: Path) -> CaseSpec:
    write_junk(d / "in")
    (d / "in" / "report.pdf").write_bytes(b"%PDF-1.4\n%%EOF\n")
    return CaseSpec(d / "in", d / "out")


def _pdf(folder: Path, study_uid: str) -> None:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = EncapsulatedPDFStorage
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = EncapsulatedPDFStorage, ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.StudyInstanceUID, ds.SeriesInstanceUID = "DOC", study_uid, generate_uid()
    ds.SeriesNumber = 99
    ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
    ds.EncapsulatedDocument = b"%PDF-1.4\n%%EOF\n\x00"
    ds.save_as(folder / "report.dcm", enforce_file_format=True)


@case("non_image_only")
def _non_image(c: Cases, d: Path) -> CaseSpec:
    study = generate_uid()
    write_non_image(d / "in", "SR", study)
    write_non_image(d / "in", "SEG", study)
    _pdf(d / "in", study)
    stamp_identifiers(d / "in")
    return CaseSpec(d / "in", d / "out")


@case("mr_only")
def _mr(c: Cases, d: Path) -> CaseSpec:
    write_mr_series(d / "in")
    stamp_identifiers(d / "in")
    return CaseSpec(d / "in", d / "out")


@case("localizer_only")
def _localizer(c: Cases, d: Path) -> CaseSpec:
    write_localizer(d / "in")
    stamp_identifiers(d / "in")
    return CaseSpec(d / "in", d / "out")


@case("missing_slice")
def _missing_slice(c: Cases, d: Path) -> CaseSpec:
    small_ct(d / "in", drop=[12])
    return CaseSpec(d / "in", d / "out")


@case("non_uniform_spacing")
def _non_uniform(c: Cases, d: Path) -> CaseSpec:
    small_ct(d / "in", step_jitter_mm=[0.0] * 12 + [0.6] * 12)
    return CaseSpec(d / "in", d / "out")


@case("gantry_tilt")
def _tilt(c: Cases, d: Path) -> CaseSpec:
    small_ct(d / "in", tilt_deg=15.0)
    return CaseSpec(d / "in", d / "out")


@case("sagittal_coronal")
def _sag_cor(c: Cases, d: Path) -> CaseSpec:
    study = generate_uid()
    small_ct(d / "in" / "sag", iop=(0, 1, 0, 0, 0, -1), study_uid=study, series_number=4)
    small_ct(d / "in" / "cor", iop=(1, 0, 0, 0, 0, -1), study_uid=study, series_number=5)
    return CaseSpec(d / "in", d / "out")


@case("enhanced_ct")
def _enhanced(c: Cases, d: Path) -> CaseSpec:
    """One multi-frame Enhanced CT object (24 frames of 32 x 32) without functional groups: no plane position
    or orientation (a valid Enhanced CT study is analysed: tests/test_multiframe.py)."""
    (d / "in").mkdir(parents=True)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = EnhancedCTImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = EnhancedCTImageStorage, ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.StudyInstanceUID, ds.SeriesInstanceUID = "CT", generate_uid(), generate_uid()
    ds.SeriesNumber, ds.ImageType = 2, ["ORIGINAL", "PRIMARY", "AXIAL", "NONE"]
    ds.Rows = ds.Columns = 32
    ds.NumberOfFrames = 24
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit, ds.PixelRepresentation = 15, 1
    ds.PixelData = np.zeros((24, 32, 32), "<i2").tobytes()
    ds.save_as(d / "in" / "enhanced.dcm", enforce_file_format=True)
    stamp_identifiers(d / "in")
    return CaseSpec(d / "in", d / "out")


@case("too_large")
def _too_large(c: Cases, d: Path) -> CaseSpec:
    """The reference study with analysis.max_voxels lowered below its size through --config."""
    s = c.study("ref")
    cfg = yaml.safe_load((REPO / "app" / "app.yaml").read_text())
    cfg["analysis"]["max_voxels"] = 100_000
    d.mkdir(parents=True, exist_ok=True)
    (d / "app.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    return CaseSpec(s.dicom_dir, d / "out", args=("--config", str(d / "app.yaml")),
                    expect={"voxels": 64 * 64 * s.n_slices})


@case("sha_mismatch")
def _sha(c: Cases, d: Path) -> CaseSpec:
    """A copy of the models folder whose hip-bone weights have one byte flipped."""
    s = c.study("ref")
    models = d / "models"
    shutil.copytree(MODELS, models)
    weights = models / "hip_bone_seg" / "model.ts"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    return CaseSpec(s.dicom_dir, d / "out", models=models)


@case("output_under_file")
def _under_file(c: Cases, d: Path) -> CaseSpec:
    """The output path lies under a regular file (chmod does not stop root; this does)."""
    s = c.study("ref")
    d.mkdir(parents=True, exist_ok=True)
    (d / "a_file").write_text("not a folder\n")
    return CaseSpec(s.dicom_dir, d / "a_file" / "out")


def _mount(target: Path, options: str) -> None:
    target.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(target)], check=True,
                   capture_output=True, text=True)


def _umount_after(target: Path, listing: Path) -> Callable[[], None]:
    def after() -> None:
        listing.write_text(json.dumps(sorted(p.relative_to(target).as_posix() for p in target.rglob("*"))))
        subprocess.run(["umount", str(target)], check=False)
    return after


def _tmpfs_output(c: Cases, d: Path, folder: str, options: str) -> CaseSpec:
    """The reference study published into ``d/folder/out`` on a tmpfs mounted with ``options``."""
    mnt = d / folder
    return CaseSpec(c.study("ref").dicom_dir, mnt / "out", before=lambda: _mount(mnt, options),
                    after=_umount_after(mnt, d / "listing.json"), expect={"listing": d / "listing.json"})


@case("output_read_only")
def _read_only(c: Cases, d: Path) -> CaseSpec:
    """The output folder is a read-only tmpfs."""
    return _tmpfs_output(c, d, "ro", "ro,size=64k")


@case("disk_full_inodes")
def _disk_full_inodes(c: Cases, d: Path) -> CaseSpec:
    """A full analysis published to a tmpfs with room for one file: the second output fails with ENOSPC."""
    return _tmpfs_output(c, d, "fs", "size=1m,nr_inodes=3")


@case("disk_full_bytes")
def _disk_full_bytes(c: Cases, d: Path) -> CaseSpec:
    """An analysis published to an 8 KiB tmpfs: the first output file runs out of space mid-write."""
    return _tmpfs_output(c, d, "fs", "size=8k")


@case("temp_full")
def _temp_full(c: Cases, d: Path) -> CaseSpec:
    """The temporary folder (TMPDIR, where outputs are staged) is an 8 KiB tmpfs: staging the SEG fails."""
    tmp = d / "tmp"  # the case's TMPDIR (Cases._run_together)
    return CaseSpec(c.study("ref").dicom_dir, d / "out", before=lambda: _mount(tmp, "size=8k"),
                    after=_umount_after(tmp, d / "listing.json"), expect={"listing": d / "listing.json"})


ALL_CASES = tuple(BUILDERS)
#: cases refused before any model runs (a few seconds each, mostly start-up); the others run whole analyses.
#: Only the pairing of runs uses it (:meth:`Cases.run`): a wrong entry costs time, never a result.
LIGHT = frozenset({"empty", "missing_input", "no_dicom", "non_image_only", "mr_only", "localizer_only",
                   "missing_slice", "non_uniform_spacing", "gantry_tilt", "sagittal_coronal", "enhanced_ct",
                   "too_large", "sha_mismatch", "output_under_file", "output_read_only"})
assert LIGHT <= set(ALL_CASES)
