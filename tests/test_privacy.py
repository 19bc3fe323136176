"""No patient identifier leaves the application except inside the DICOM outputs; inputs are never modified;
nothing is written outside the output folder and the temp folder.

The runs are those of ``tests/robust_cases.py`` (shared with ``test_robustness.py``): every case is run at log
level DEBUG on inputs that carry the recognisable identifiers of ``robust_cases.IDENT`` (name, ID, birth date,
accession number; a non-ASCII name and malformed values where the case is about them), with TMPDIR and HOME
pointing at fresh folders and, when strace is installed, every file creation traced.
"""
from __future__ import annotations

from pathlib import Path

import pytest
from conftest import REPO
from robust_cases import ALL_CASES, STRACE, CaseRun, Cases

pytestmark = pytest.mark.app

#: the minimum matrix asked for; every other case is checked too (the runs are shared with test_robustness)
REQUIRED = ("good", "bad_files", "no_dicom", "clinical_malformed", "clinical_missing_non_ascii", "sha_mismatch",
            "output_under_file")
CHECKED = REQUIRED + tuple(n for n in ALL_CASES if n not in REQUIRED)


@pytest.fixture(scope="session")
def cases(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> Cases:
    return Cases.get(tmp_path_factory)


def _leaks(text: str, secrets: tuple[str, ...]) -> list[str]:
    low = text.lower()
    return [s for s in secrets if s.lower() in low]


def _is_dicom(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(132)[128:132] == b"DICM"


def _under(path: str, *roots: Path) -> bool:
    return any(path == str(r) or path.startswith(str(r) + "/") for r in roots)


@pytest.mark.parametrize("name", CHECKED)
def test_no_identifier_in_streams_or_non_dicom_outputs(cases: Cases, name: str) -> None:
    run = cases.run(name)
    assert run.secrets, "a case without identifiers checks nothing"
    assert _leaks(run.run.stdout, run.secrets) == [], "stdout"
    assert _leaks(run.run.stderr, run.secrets) == [], "stderr"
    out = run.run.output_dir
    files = [p for p in out.rglob("*") if p.is_file()] if out.is_dir() else []
    for p in files:
        if not _is_dicom(p):
            assert _leaks(p.read_text(errors="replace"), run.secrets) == [], p.name
    if run.has_result:  # the DICOM outputs do carry the patient module: that is their purpose
        assert any(_is_dicom(p) for p in files) == any(run.result["outputs"].values())


@pytest.mark.parametrize("name", ALL_CASES)
def test_inputs_never_modified(cases: Cases, name: str) -> None:
    run = cases.run(name)
    assert run.inputs_after == run.inputs_before


def _allowed_roots(run: CaseRun) -> tuple[Path, ...]:
    out = run.run.output_dir
    return (out, run.tmpdir, Path("/dev/null"), Path("/dev/shm"), Path("/proc"),
            # third-party import side effects (matplotlib font cache, cupy kernel cache folder): see
            # docs/robustness.md; they hold no patient data (checked below)
            run.home / ".cache" / "matplotlib", run.home / ".config" / "matplotlib", run.home / ".cupy")


@pytest.mark.parametrize("name", ALL_CASES)
def test_nothing_written_outside_output_and_temp(cases: Cases, name: str) -> None:
    """Every file the run created or opened for writing (strace) lies under the output folder, TMPDIR, or a
    library cache under HOME; never in the input folder or the repository (Python bytecode caches aside)."""
    run = cases.run(name)
    if run.trace is None:
        # no strace: fall back to the folders we can watch (input unchanged is checked above)
        assert list(run.tmpdir.iterdir()) == []
        return
    outside = []
    for path in run.trace:
        if _under(path, *_allowed_roots(run)) or path in (str(run.home / ".cache"), str(run.home / ".config")):
            continue
        if _under(path, REPO) and "/__pycache__/" in path and path.endswith(".pyc"):
            continue
        outside.append(path)
    assert outside == []
    if run.input_dir is not None:
        assert not any(_under(p, run.input_dir) for p in run.trace)
    assert list(run.tmpdir.iterdir()) == []


def test_home_caches_hold_no_identifier(cases: Cases) -> None:
    cases.run("good")
    for p in cases.home.rglob("*"):
        if p.is_file():
            assert _leaks(p.read_text(errors="replace"), cases.run("good").secrets) == [], p


def test_strace_available_for_the_write_check() -> None:
    """The write check above is only complete with strace (Debian package ``strace``)."""
    assert STRACE, "install strace: without it only TMPDIR and the input folder are checked"
