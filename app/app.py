"""The application graph. It composes operators and nothing else.

    series_selector -> series_to_volume -+-> segment hip bones ---+-> largest components -> hip-frame location
                                         +-> segment tumour ------+
      -> clinical variables -> classification -> DICOM SEG -> DICOM SR (TID 1500) -> key images (SC)
      -> key object selection (KOS) -> result.json + publish
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from monai.deploy.conditions import CountCondition
from monai.deploy.core import Application

from core.config import AppConfig
from operators.classifier import TumourClassifierOperator
from operators.clinical_variables import ClinicalVariablesOperator
from operators.dicom_seg_writer import DicomSegWriterOperator
from operators.dicom_sr_writer import DicomSRWriterOperator
from operators.hip_frame_location import HipFrameLocationOperator
from operators.key_images_writer import KeyImagesWriterOperator
from operators.kos_writer import KosWriterOperator
from operators.postprocess import LargestComponentOperator
from operators.result_publisher import ResultPublisherOperator
from operators.segmentation import SegmentationOperator
from operators.series_selector import SeriesSelectorOperator
from operators.series_to_volume import SeriesToVolumeOperator


class SacralTumourApp(Application):
    """Noncontrast pelvic CT study in; DICOM SEG, TID 1500 SR, key images, KOS and result.json out."""

    def __init__(self, *args: Any, config: AppConfig, input_dir: Path, output_dir: Path, models_dir: Path,
                 **kwargs: Any) -> None:
        self.config, self.input_dir, self.output_dir, self.models_dir = config, input_dir, output_dir, models_dir
        self.outcome: dict[str, Any] = {}
        super().__init__(*args, **kwargs)

    def compose(self) -> None:
        m = self.config.models
        device = m.device
        select = SeriesSelectorOperator(self, CountCondition(self, 1), name="series_selector",
                                        input_dir=self.input_dir, output_dir=self.output_dir, config=self.config)
        volume = SeriesToVolumeOperator(self, name="series_to_volume")
        hip = SegmentationOperator(self, name="hip_bone_segmentation", models_dir=self.models_dir,
                                   model_name=m.hip_bone_seg, target="hip_labels", device=device)
        tumour = SegmentationOperator(self, name="tumour_segmentation", models_dir=self.models_dir,
                                      model_name=m.tumour_seg, target="tumour_labels", device=device)
        largest = LargestComponentOperator(self, name="largest_component")
        location = HipFrameLocationOperator(self, name="hip_frame_location")
        clinical = ClinicalVariablesOperator(self, name="clinical_variables", models_dir=self.models_dir,
                                             classifier=m.tumour_classifier)
        classify = TumourClassifierOperator(self, name="tumour_classifier", models_dir=self.models_dir,
                                            model_name=m.tumour_classifier, device=device)
        seg = DicomSegWriterOperator(self, name="dicom_seg_writer", models_dir=self.models_dir,
                                     seg_models=m.segmentation)
        sr = DicomSRWriterOperator(self, name="dicom_sr_writer")
        key_images = KeyImagesWriterOperator(self, name="key_images_writer")
        kos = KosWriterOperator(self, name="kos_writer")
        publish = ResultPublisherOperator(self, name="result_publisher", outcome=self.outcome)

        self.add_flow(select, volume, {("state", "state")})
        self.add_flow(volume, hip, {("state", "state")})
        self.add_flow(volume, tumour, {("state", "state")})
        self.add_flow(hip, largest, {("state", "hip")})
        self.add_flow(tumour, largest, {("state", "tumour")})
        for a, b in ((largest, location), (location, clinical), (clinical, classify), (classify, seg), (seg, sr),
                     (sr, key_images), (key_images, kos), (kos, publish)):
            self.add_flow(a, b, {("state", "state")})
