"""Writing a run's outputs: staged in a private temporary folder, then published together, or nothing.

* :func:`check_output_writable` probes the output folder before the analysis (exit 4 when it cannot be written);
* :func:`stage_dataset` writes one DICOM object into the run's staging folder (created on first use);
* :func:`publish` copies the staged files into the output folder under hidden ``.partial`` names, renames
  each (atomic on one file system) and writes ``result.json`` last; on any failure it removes what it wrote;
* :func:`finish` is the last step of every run: it publishes what the run staged (nothing after an error) with
  its result.json, turns *any* ``OSError`` (a full or read-only output folder, a full temporary folder) into
  status ``error`` with exit code 4 and nothing in the output folder, and always removes the staging folder.

An exit code of 4 therefore always means: no result.json and no other output was left in the output folder.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from core.run_state import EXIT_OUTPUT, NO_OUTPUTS, RunFailure, RunState, result_document
from core.status import Status

RESULT_FILE = "result.json"
STAGING_PREFIX = "sacral-tumour-"


class SavableDataset(Protocol):
    """A DICOM object that can write itself (pydicom ``Dataset``, highdicom objects) and names its series."""

    Modality: Any
    SOPClassUID: Any
    SOPInstanceUID: Any
    SeriesInstanceUID: Any

    def save_as(self, filename: str | os.PathLike[str], /, **kwargs: Any) -> None: ...


def output_failure(e: OSError) -> RunFailure:
    """The run's end for an output that cannot be written: status error, exit 4, the OS's reason only."""
    return RunFailure(f"cannot write the outputs: {e.strerror or type(e).__name__}", EXIT_OUTPUT)


def check_output_writable(out_dir: Path) -> None:
    """Create ``out_dir`` and a probe file in it (removed again); RunFailure (exit 4) if that fails.

    Catches a missing, read-only or non-folder output path before the analysis; a disk that fills up later
    is handled by :func:`finish`.
    """
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test-", dir=out_dir)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise RunFailure(f"output folder is not writable: {e.strerror or type(e).__name__}", EXIT_OUTPUT) from None


def staging_dir(state: RunState) -> Path:
    """The run's private staging folder under the temporary folder (created on first use)."""
    if state.staging_dir is None:
        state.staging_dir = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX))
    return state.staging_dir


def stage_dataset(state: RunState, role: str, name: str, ds: SavableDataset) -> Path:
    """Write ``ds`` into the staging folder as ``name`` and record its link for result.json.

    ``role`` is ``seg``, ``sr``, ``kos`` or ``key_image``; the link holds the file name, SOP Class, SOP
    Instance and Series Instance UIDs and the modality (read from ``ds``). A failed write (e.g. a full
    temporary folder) raises :class:`RunFailure` with exit code 4.
    """
    try:
        path = staging_dir(state) / name
        ds.save_as(path)
    except OSError as e:
        raise output_failure(e) from None
    if role == "key_image":
        state.staged_key_images.append(path)
    else:
        state.staged[role] = path
    state.dicom_outputs.append({
        "role": role, "file": name, "modality": str(ds.Modality), "sop_class_uid": str(ds.SOPClassUID),
        "sop_instance_uid": str(ds.SOPInstanceUID), "series_instance_uid": str(ds.SeriesInstanceUID)})
    return path


def _write_partial(partial: Path, src: Path | None, data: bytes | None) -> None:
    if src is not None:
        shutil.copyfile(src, partial)
    else:
        partial.write_bytes(data or b"")
    with open(partial, "rb") as f:
        os.fsync(f.fileno())


def publish(files: Mapping[str, Path], out_dir: Path, result: bytes | None = None) -> None:
    """Copy ``{final name: staged path}`` into ``out_dir``, then ``result`` as result.json; all or nothing.

    Each file goes in as ``.<name>.partial`` and is renamed to its name (atomic per file). Raises OSError
    after removing whatever it had written.
    """
    items: list[tuple[str, Path | None, bytes | None]] = [(n, p, None) for n, p in files.items()]
    if result is not None:
        items.append((RESULT_FILE, None, result))
    written: list[Path] = []
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        for name, src, data in items:
            final, partial = out_dir / name, out_dir / f".{name}.partial"
            written.append(partial)
            _write_partial(partial, src, data)
            os.replace(partial, final)
            written.append(final)
    except OSError:
        for p in written:
            try:
                p.unlink()
            except OSError:
                pass
        raise


def finish(state: RunState) -> dict[str, Any]:
    """Publish the run's outputs and result.json, remove the staging folder; returns the result document.

    After an error only result.json (status ``error``, no outputs) is published. Any ``OSError`` on the way
    ends the run with status ``error`` and exit code 4 (``state`` is updated) and nothing in the output folder.
    """
    try:
        outputs: dict[str, Any] = {**NO_OUTPUTS, "key_images": []}
        files: dict[str, Path] = {}
        links: list[dict[str, str]] = []
        if state.status != Status.ERROR:
            for key in ("seg", "sr", "kos"):
                if key in state.staged:
                    outputs[key] = state.staged[key].name
                    files[state.staged[key].name] = state.staged[key]
            outputs["key_images"] = [p.name for p in state.staged_key_images]
            files.update({p.name: p for p in state.staged_key_images})
            links = [link for link in state.dicom_outputs if link["file"] in files]
        doc = result_document(state, outputs, links)
        if state.exit_code == EXIT_OUTPUT:  # an output already failed while staging: publish nothing
            return result_document(state, {**NO_OUTPUTS, "key_images": []})
        publish(files, state.output_dir, (json.dumps(doc, indent=2) + "\n").encode())
        return doc
    except OSError as e:
        if state.exit_code != EXIT_OUTPUT:  # keep the pre-flight's reason when it already said so
            failure = output_failure(e)
            state.fail(failure.reason, failure.exit_code)
        return result_document(state, {**NO_OUTPUTS, "key_images": []})
    finally:
        if state.staging_dir is not None:
            shutil.rmtree(state.staging_dir, ignore_errors=True)
