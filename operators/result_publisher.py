"""Step 9: write result.json and publish all outputs together, or nothing partial (``core.publishing``).

Runs after an error too, to write ``result.json`` with status ``error`` and its reason. Any failure to write
(output or temporary folder full or read-only) ends the run with exit code 4 and nothing in the output folder.
"""
from __future__ import annotations

from typing import Any

from monai.deploy.core import Fragment, OperatorSpec

from core.publishing import finish
from core.run_state import RunState
from operators.base import StageOperator


class ResultPublisherOperator(StageOperator):
    """The sink: hands the result document and exit code to the application through ``outcome``."""

    stage = "publish"
    runs_when_finished = True

    def __init__(self, fragment: Fragment, *args: Any, outcome: dict[str, Any], **kwargs: Any) -> None:
        self.outcome = outcome
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        spec.input("state")

    def compute(self, op_input: Any, op_output: Any, context: Any) -> None:
        state: RunState = self.receive_state(op_input)
        doc = finish(state)  # never raises OSError: a write failure is status error, exit 4
        self.outcome.update(document=doc, exit_code=state.exit_code)
