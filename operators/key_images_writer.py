"""Step 8c: key images (Secondary Capture, true colour) of the findings, staged for publication.

For PACS viewers that show neither SEG overlays nor SR content: an axial, a coronal and a sagittal view
through the tumour (``tumour_found``), or one axial view saying "No sacral tumour detected" / why the series
was not applicable (``core.key_images``). Left out when ``outputs.key_images`` of app.yaml is false.
"""
from __future__ import annotations

from core.key_images import build_key_image_datasets, render_key_images
from core.publishing import stage_dataset
from core.run_state import RunState, findings
from core.status import Status
from operators.base import StageOperator

KEY_IMAGE_FILE = "sacral_tumour_key_{index}_{view}.dcm"


class KeyImagesWriterOperator(StageOperator):
    stage = "write_key_images"
    runs_when_finished = True  # a not_applicable run gets an image that says why

    def run(self, state: RunState) -> None:
        if not state.config.outputs.key_images:
            return
        # the frame is drawn where the analysis used it (a not_applicable study shows why it is not analysed)
        frame = state.hip_frame if state.status in (Status.TUMOUR_FOUND, Status.NO_TUMOUR) else None
        version, loaded = state.config.application.version, state.require_loaded()
        images = render_key_images(loaded.volume, state.labels, findings(state), frame, app_version=version)
        datasets = build_key_image_datasets(loaded.datasets, images, loaded.volume, app_version=version)
        for i, (img, ds) in enumerate(zip(images, datasets), start=1):
            stage_dataset(state, "key_image", KEY_IMAGE_FILE.format(index=i, view=img.view), ds)
        state.key_image_datasets = datasets
