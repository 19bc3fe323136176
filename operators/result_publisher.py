"""Step 9: write result.json and publish all outputs together, or nothing partial.

Staged files are copied into the output folder under a hidden ``.partial`` name and renamed (atomic on one
file system); ``result.json`` is renamed last. On any write failure every file of this run is removed from
the output folder and the run ends with exit code 4. This operator also runs after an error, to write
``result.json`` with status ``error`` and its reason.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from monai.deploy.core import Fragment

from core.run_state import EXIT_OUTPUT, NO_OUTPUTS, RunFailure, RunState, result_document
from core.status import Status
from operators.base import StageOperator

log = logging.getLogger("sacral_tumour")
RESULT_FILE = "result.json"


def publish(files: dict[str, Path], out_dir: Path) -> None:
    """Copy ``{final name: staged path}`` into ``out_dir`` atomically per file; all or nothing.

    Raises OSError after removing whatever it had written.
    """
    written: list[Path] = []
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        for name, src in files.items():
            final = out_dir / name
            partial = out_dir / f".{name}.partial"
            written.append(partial)
            shutil.copyfile(src, partial)
            with open(partial, "rb") as f:
                os.fsync(f.fileno())
            os.replace(partial, final)
            written.append(final)
    except OSError:
        for p in written:
            try:
                p.unlink()
            except OSError:
                pass
        raise


def check_output_writable(out_dir: Path) -> None:
    """Create ``out_dir`` and a probe file in it (removed again); RunFailure (exit 4) if that fails.

    Catches a missing, read-only or non-folder output path before the analysis; a disk that fills up later
    is handled by :func:`publish`.
    """
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test-", dir=out_dir)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise RunFailure(f"output folder is not writable: {e.strerror or type(e).__name__}", EXIT_OUTPUT) from None


class ResultPublisherOperator(StageOperator):
    stage = "publish"
    runs_when_finished = True

    def __init__(self, fragment: Fragment, *args: Any, outcome: dict[str, Any], **kwargs: Any) -> None:
        self.outcome = outcome
        super().__init__(fragment, *args, **kwargs)

    def compute(self, op_input: Any, op_output: Any, context: Any) -> None:
        state: RunState = self.receive_state(op_input)
        self.run(state)

    def setup(self, spec: Any) -> None:
        spec.input("state")

    def run(self, state: RunState) -> None:
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
        staging = state.staging()
        (staging / RESULT_FILE).write_text(json.dumps(doc, indent=2) + "\n")
        files[RESULT_FILE] = staging / RESULT_FILE
        try:
            publish(files, state.output_dir)
        except OSError as e:
            if state.exit_code != EXIT_OUTPUT:  # keep the pre-flight's reason when it already said so
                state.fail(f"cannot write the outputs: {e.strerror or type(e).__name__}", EXIT_OUTPUT)
            doc = result_document(state, {**NO_OUTPUTS, "key_images": []})
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        self.outcome.update(document=doc, exit_code=state.exit_code)
