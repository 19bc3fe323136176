"""The shared shell of every stage: receive the run state, time the stage, turn failures into a status.

A stage is skipped once the run's outcome is decided (``error`` or ``not_applicable``) unless it declares
``runs_when_finished`` (the output writers). Exceptions never escape into Holoscan: a
:class:`core.run_state.RunFailure` becomes status ``error`` with its reason and exit code; anything else
becomes an internal error whose message names only the exception type (never data that may identify a
patient), while the traceback goes to the debug log.
"""
from __future__ import annotations

import logging
import time
import traceback
from pathlib import Path
from typing import Any

from monai.deploy.core import Fragment, Operator, OperatorSpec

from core.models import LoadedModel, ModelError, load_model, pick_device
from core.run_state import EXIT_INTERNAL, EXIT_MODEL, RunFailure, RunState
from core.status import Status

log = logging.getLogger("sacral_tumour")


class StageOperator(Operator):
    """Base class: subclasses set ``stage`` and implement :meth:`run`."""

    stage = "stage"
    inputs: tuple[str, ...] = ("state",)
    runs_when_finished = False

    def setup(self, spec: OperatorSpec) -> None:
        for name in self.inputs:
            spec.input(name)
        spec.output("state")

    def compute(self, op_input: Any, op_output: Any, context: Any) -> None:
        state = self.receive_state(op_input)
        if state.status != Status.ERROR and (self.runs_when_finished or not state.finished):
            t0 = time.perf_counter()
            try:
                self.run(state)
            except RunFailure as e:
                state.fail(e.reason, e.exit_code)
            except Exception as e:  # noqa: BLE001 - the run must end with a status, never a traceback
                # Code locations only: exception messages may quote header values.
                log.debug("stage %s failed with %s at %s", self.stage, type(e).__name__,
                          " <- ".join(f"{f.name}:{f.lineno}" for f in traceback.extract_tb(e.__traceback__)[::-1][:6]))
                state.fail(f"internal error in stage '{self.stage}': {type(e).__name__}", EXIT_INTERNAL)
            state.timed(self.stage, time.perf_counter() - t0)
        op_output.emit(state, "state")

    def receive_state(self, op_input: Any) -> RunState:
        """The run state from the input port(s); fan-in ports all carry the same object."""
        states = [op_input.receive(name) for name in self.inputs]
        state: RunState = states[0]
        return state

    def run(self, state: RunState) -> None:  # pragma: no cover - abstract
        raise NotImplementedError


class ModelStageOperator(StageOperator):
    """A stage that runs one model: loads it once (sha256 checked first) on first use, on the GPU when present.

    A missing or corrupted model ends the run with status ``error`` and exit code 3.
    """

    def __init__(self, fragment: Fragment, *args: Any, models_dir: Path, model_name: str, device: str = "auto",
                 **kwargs: Any) -> None:
        self.models_dir, self.model_name, self.device_pref = Path(models_dir), model_name, device
        self._model: LoadedModel | None = None
        super().__init__(fragment, *args, **kwargs)

    def loaded(self) -> LoadedModel:
        if self._model is None:
            try:
                model = load_model(self.models_dir, self.model_name, pick_device(self.device_pref))
                self.on_load(model)
            except ModelError as e:
                raise RunFailure(str(e), EXIT_MODEL) from None
            self._model = model
        return self._model

    def on_load(self, model: LoadedModel) -> None:
        """Hook for loading what else the model needs (may raise ModelError)."""

    def model(self, state: RunState) -> LoadedModel:
        """The loaded model, recorded in ``state.models`` (name, version, sha256, device; for a segmentation
        model also the dtype its forward passes run in, :func:`core.inference.autocast_dtype`, and its test-time
        flips, ``flip_average``, when it has any)."""
        m = self.loaded()
        state.models[m.name] = {"version": m.version, "sha256": m.sha256, "device": m.device.type}
        if m.metadata.segmentation is not None:
            from core.inference import forward_precision
            state.models[m.name]["precision"] = forward_precision(m.metadata, m.device)
            if m.metadata.seg.sliding_window.flip_average:
                state.models[m.name]["flip_average"] = list(m.metadata.seg.sliding_window.flip_average)
        return m
