"""core.publishing: outputs are staged, then published together with result.json, or nothing at all.

Full disks are real here: a file name in the staging or output folder is a symbolic link to ``/dev/full``,
where every write fails in the kernel with ENOSPC (no library call is replaced).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pydicom
import pytest
from dicom_factory import write_ct_series

from app.config import DEFAULT_CONFIG, load_config
from core.publishing import RESULT_FILE, check_output_writable, finish, stage_dataset
from core.run_state import EXIT_OK, EXIT_OUTPUT, RunFailure, RunState, findings, result_document
from core.status import Status

pytestmark = pytest.mark.unit

FULL = Path("/dev/full")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> pydicom.Dataset:
    return pydicom.dcmread(write_ct_series(tmp_path_factory.mktemp("ct"), n=2).files[0])


def new_state(tmp_path: Path) -> RunState:
    state = RunState(tmp_path / "in", tmp_path / "out", load_config(DEFAULT_CONFIG))
    state.status = Status.NOT_APPLICABLE
    state.staging_dir = tmp_path / "staging"
    state.staging_dir.mkdir()
    return state


def test_dev_full_is_full() -> None:
    with pytest.raises(OSError) as e, open(FULL, "wb") as f:
        f.write(b"x" * 65536)
        f.flush()
    assert e.value.strerror == "No space left on device"


def test_everything_published_with_result_json_last(tmp_path: Path, dataset: pydicom.Dataset) -> None:
    state = new_state(tmp_path)
    stage_dataset(state, "sr", "a_sr.dcm", dataset)
    stage_dataset(state, "key_image", "a_key.dcm", dataset)
    doc = finish(state)
    assert state.exit_code == EXIT_OK and doc["status"] == Status.NOT_APPLICABLE
    assert sorted(p.name for p in state.output_dir.iterdir()) == ["a_key.dcm", "a_sr.dcm", RESULT_FILE]
    assert json.loads((state.output_dir / RESULT_FILE).read_text()) == json.loads(json.dumps(doc))
    assert doc["outputs"] == {"seg": None, "sr": "a_sr.dcm", "kos": None, "key_images": ["a_key.dcm"]}
    assert pydicom.dcmread(state.output_dir / "a_sr.dcm").SOPInstanceUID == dataset.SOPInstanceUID
    assert not (tmp_path / "staging").exists()


def test_full_temporary_folder_ends_with_exit_4_and_nothing_in_the_output_folder(
        tmp_path: Path, dataset: pydicom.Dataset) -> None:
    state = new_state(tmp_path)
    state.output_dir.mkdir()
    stage_dataset(state, "seg", "a_seg.dcm", dataset)
    (state.staging_dir / "a_sr.dcm").symlink_to(FULL)  # the temporary folder fills up at the second output
    with pytest.raises(RunFailure) as e:
        stage_dataset(state, "sr", "a_sr.dcm", dataset)
    assert (e.value.exit_code, e.value.reason) == (EXIT_OUTPUT, "cannot write the outputs: No space left on device")
    state.fail(e.value.reason, e.value.exit_code)  # what the stage's base class does with a RunFailure
    doc = finish(state)
    assert (state.status, state.exit_code, doc["status"]) == (Status.ERROR, EXIT_OUTPUT, "error")
    assert doc["reason"] == "cannot write the outputs: No space left on device"
    assert doc["outputs"] == {"seg": None, "sr": None, "kos": None, "key_images": []}
    assert list(state.output_dir.iterdir()) == []
    assert not (tmp_path / "staging").exists()


def test_full_output_folder_mid_publication_removes_what_was_written(
        tmp_path: Path, dataset: pydicom.Dataset) -> None:
    state = new_state(tmp_path)
    stage_dataset(state, "seg", "a_seg.dcm", dataset)
    stage_dataset(state, "sr", "a_sr.dcm", dataset)
    state.output_dir.mkdir()
    (state.output_dir / ".a_sr.dcm.partial").symlink_to(FULL)  # the SEG goes in, the SR does not
    doc = finish(state)
    assert (state.status, state.exit_code) == (Status.ERROR, EXIT_OUTPUT)
    assert doc["reason"] == "cannot write the outputs: No space left on device"
    assert list(state.output_dir.iterdir()) == []
    assert not (tmp_path / "staging").exists()


def test_result_json_that_cannot_be_written_is_exit_4(tmp_path: Path) -> None:
    state = new_state(tmp_path)
    state.output_dir.mkdir()
    (state.output_dir / f".{RESULT_FILE}.partial").symlink_to(FULL)
    doc = finish(state)
    assert (doc["status"], state.exit_code) == ("error", EXIT_OUTPUT)
    assert list(state.output_dir.iterdir()) == []


def test_an_earlier_error_publishes_result_json_only(tmp_path: Path, dataset: pydicom.Dataset) -> None:
    state = new_state(tmp_path)
    stage_dataset(state, "sr", "a_sr.dcm", dataset)
    state.fail("no qualifying series", 2)
    doc = finish(state)
    assert [p.name for p in state.output_dir.iterdir()] == [RESULT_FILE]
    assert (doc["status"], doc["reason"], doc["outputs"]["sr"]) == ("error", "no qualifying series", None)


def test_output_path_under_a_file_fails_before_the_analysis(tmp_path: Path) -> None:
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(RunFailure) as e:
        check_output_writable(tmp_path / "a_file" / "out")
    assert (e.value.exit_code, e.value.reason) == (EXIT_OUTPUT, "output folder is not writable: Not a directory")
    check_output_writable(tmp_path / "new" / "out")
    assert os.listdir(tmp_path / "new" / "out") == []


def test_result_json_states_the_findings_the_sr_and_key_images_get(tmp_path: Path, dataset: pydicom.Dataset) -> None:
    state = new_state(tmp_path)
    state.status, state.predicted_class, state.probabilities = Status.TUMOUR_FOUND, "chordoma", {"chordoma": 0.9}
    state.segment_numbers = {"sacral tumour": 3}
    state.warn("a warning")
    f = findings(state)
    assert f["segment_numbers"] == {"sacral tumour": 3} and f["status"] == Status.TUMOUR_FOUND
    without_seg = result_document(state, {"seg": None, "sr": "a_sr.dcm", "kos": None, "key_images": []})
    with_seg = result_document(state, {"seg": "a_seg.dcm", "sr": "a_sr.dcm", "kos": None, "key_images": []})
    for key in f:
        if key != "segment_numbers":
            assert with_seg[key] == without_seg[key] == f[key], key
    assert (with_seg["segment_numbers"], without_seg["segment_numbers"]) == ({"sacral tumour": 3}, {})


def test_exit_now_flushes_and_keeps_the_exit_code(tmp_path: Path) -> None:
    """app.__main__.exit_now ends the process without the interpreter's teardown: what was printed and logged
    before it still arrives (block-buffered pipes, a log file), and the exit code is the one given."""
    import subprocess
    import sys
    log = tmp_path / "run.log"
    code = ("import logging, sys; from app.__main__ import exit_now; "
            f"logging.basicConfig(filename={str(log)!r}, level=logging.INFO); "
            "logging.getLogger('t').info('logged line'); print('printed line'); "
            "print('error line', file=sys.stderr); exit_now(3)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       cwd=Path(__file__).resolve().parents[1], env={**os.environ, "PYTHONUNBUFFERED": ""})
    assert r.returncode == 3
    assert r.stdout == "printed line\n"
    assert r.stderr.endswith("error line\n")
    assert log.read_text().strip().endswith("logged line")
