"""Step 6: clinical variables (age and sex from the DICOM header, tumour volume from the mask).

Missing values are imputed as the classifier's metadata says (``features[].impute``) and listed in
``clinical.imputed``, never silently.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from monai.deploy.core import Fragment

from core import clinical
from core.models import ModelError, read_metadata
from core.run_state import EXIT_MODEL, RunFailure, RunState
from core.status import Status
from operators.base import StageOperator


class ClinicalVariablesOperator(StageOperator):
    stage = "clinical_variables"
    runs_when_finished = True  # a not_applicable run still reports the header's age and sex

    def __init__(self, fragment: Fragment, *args: Any, models_dir: Path, classifier: str, **kwargs: Any) -> None:
        self.models_dir, self.classifier = Path(models_dir), classifier
        super().__init__(fragment, *args, **kwargs)

    def run(self, state: RunState) -> None:
        header = state.require_loaded().datasets[0]
        age, sex = clinical.age_years(header), clinical.sex(header)
        values: dict[str, Any] = {"sex": sex, "age_years": age}
        if state.tumour is not None:
            values["tumour_volume_ml"] = state.tumour["volume_ml"]
            values.update(zip(("loc_u", "loc_v", "loc_w"), state.tumour["location_hip_frame"]))
        imputed: list[str] = []
        if state.status == Status.TUMOUR_FOUND:
            try:
                spec = read_metadata(self.models_dir / self.classifier).clf.features
            except ModelError as e:
                raise RunFailure(str(e), EXIT_MODEL) from None
            _, imputed = clinical.standardise(values, spec)
            for name in imputed:
                state.warn(f"{name} missing or malformed in the DICOM header: imputed for the classifier")
        state.tabular = values
        state.clinical = {"age_years": None if age is None else round(age, 2), "sex": sex,
                          "imputed": [{"age_years": "age"}.get(n, n) for n in imputed]}
