"""Step 8a: DICOM SEG (BINARY) of the non-empty segments, staged for publication.

Not the SDK's DICOMSegmentationWriterOperator: segment codes and laterality come from the models'
metadata, the SEG must exist only with the other outputs (staged, then published together), and the
mapping of label values to segment numbers is needed by the SR. Each segment's algorithm identification is
the model that produced it (name, version, sha256); Software Versions is the application's version.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from monai.deploy.core import Fragment

from core import provenance
from core.models import read_metadata
from core.publishing import stage_dataset
from core.run_state import RunState
from core.seg_output import build_seg, segment_number_map
from operators.base import StageOperator

SEG_FILE = "sacral_tumour_seg.dcm"


class DicomSegWriterOperator(StageOperator):
    stage = "write_seg"
    runs_when_finished = True  # a not_applicable run still gets whatever was segmented

    def __init__(self, fragment: Fragment, *args: Any, models_dir: Path, seg_models: tuple[str, ...],
                 **kwargs: Any) -> None:
        self.models_dir, self.seg_models = Path(models_dir), tuple(seg_models)
        super().__init__(fragment, *args, **kwargs)

    def run(self, state: RunState) -> None:
        if state.labels is None or not np.any(state.labels.array):
            return
        segments = []
        for name in self.seg_models:
            meta = read_metadata(self.models_dir / name)
            used = state.models.get(meta.name, {})  # the model as loaded (sha256 checked)
            algorithm = {"name": meta.name, "version": str(used.get("version", meta.version)),
                         "sha256": str(used.get("sha256", meta.sha256))}
            # build_seg's segment entries: the label's metadata form (codes included) and its algorithm
            segments += [{**lab.to_dict(), "algorithm": algorithm} for lab in meta.seg.foreground]
        app = state.config.application
        seg = build_seg(state.require_loaded().datasets, np.ascontiguousarray(state.labels.array), segments,
                        algorithm_name=app.title, algorithm_version=app.version,
                        software_versions=provenance.software_versions(app.version),
                        source_frames=state.require_loaded().source_frames)
        state.segment_numbers = segment_number_map(seg, segments)
        stage_dataset(state, "seg", SEG_FILE, seg)
        state.seg_dataset = seg

