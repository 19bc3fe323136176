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
from typing import Any

from monai.deploy.core import Fragment, Operator, OperatorSpec

from core.run_state import EXIT_INTERNAL, RunFailure, RunState

log = logging.getLogger("sacral_tumour")


class StageOperator(Operator):
    """Base class: subclasses set ``stage`` and implement :meth:`run`."""

    stage = "stage"
    inputs: tuple[str, ...] = ("state",)
    runs_when_finished = False

    def __init__(self, fragment: Fragment, *args: Any, **kwargs: Any) -> None:
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        for name in self.inputs:
            spec.input(name)
        spec.output("state")

    def compute(self, op_input: Any, op_output: Any, context: Any) -> None:
        state = self.receive_state(op_input)
        if state.status != "error" and (self.runs_when_finished or not state.finished):
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
        return states[0]

    def run(self, state: RunState) -> None:  # pragma: no cover - abstract
        raise NotImplementedError
