"""The MONAI Deploy App SDK's stock single-model pipeline, for comparison (``python -m bench.stock_app``).

    DICOMDataLoaderOperator -> DICOMSeriesSelectorOperator -> DICOMSeriesToVolumeOperator
      -> MonaiSegInferenceOperator (hip-bone TorchScript model) -> DICOMSegmentationWriterOperator

Built like the SDK's example apps (ai_spleen_seg_app and friends): pre-transforms LoadImaged (InMemImageReader),
EnsureChannelFirstd, Orientationd, Spacingd, ScaleIntensityRanged; post-transforms Activationsd(softmax),
Invertd (linear), AsDiscreted(argmax). Orientation, spacing, intensity window and sliding-window settings come
from the model's metadata.json, so the network sees what our pipeline gives it; one extra ``Transposed`` puts the
MONAI (x, y, z) array into the model's D-H-W order (inverted by Invertd like the rest). The spleen example's
SaveImaged (a NIfTI copy of the mask) is left out. Each operator's compute time is written to
``OUTPUT/stock_timings.json``.

Usage: ``python -m bench.stock_app -i DICOM_DIR -o OUT -m MODELS_DIR [--model hip_bone_seg] [--series-regex RE]``
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from app.runtime import preload_cudart, quiet_threads  # noqa: E402
from core.models import ModelMetadata, read_metadata  # noqa: E402

TIMINGS: dict[str, float] = {}


def _timed(cls: type) -> type:
    """Subclass of an SDK operator that adds its compute time to TIMINGS under the operator's name."""

    class Timed(cls):  # type: ignore[misc, valid-type]
        def compute(self, op_input: Any, op_output: Any, context: Any) -> None:
            t0 = time.perf_counter()
            try:
                super().compute(op_input, op_output, context)
            finally:
                TIMINGS[self.name] = round(TIMINGS.get(self.name, 0.0) + time.perf_counter() - t0, 3)

    Timed.__name__ = cls.__name__
    return Timed


def build_app(input_dir: Path, output_dir: Path, model_file: Path, metadata: ModelMetadata, series_regex: str) -> Any:
    from monai.deploy.conditions import CountCondition
    from monai.deploy.core import AppContext, Application
    from monai.deploy.operators.dicom_data_loader_operator import DICOMDataLoaderOperator
    from monai.deploy.operators.dicom_seg_writer_operator import DICOMSegmentationWriterOperator, SegmentDescription
    from monai.deploy.operators.dicom_series_selector_operator import DICOMSeriesSelectorOperator
    from monai.deploy.operators.dicom_series_to_volume_operator import DICOMSeriesToVolumeOperator
    from monai.deploy.operators.monai_seg_inference_operator import InMemImageReader, MonaiSegInferenceOperator
    from monai.transforms import (
        Activationsd, AsDiscreted, Compose, EnsureChannelFirstd, Invertd, LoadImaged, Orientationd,
        ScaleIntensityRanged, Spacingd, Transposed,
    )
    from pydicom.sr.codedict import codes

    seg = metadata.seg
    sw = seg.sliding_window
    spacing_xyz = tuple(reversed(seg.spacing_mm))  # metadata is D-H-W
    window = seg.intensity

    class StockSegOperator(MonaiSegInferenceOperator):
        """MonaiSegInferenceOperator with the spleen example's transforms, set from the model's metadata."""

        def pre_process(self, img_reader: InMemImageReader, *args: Any, **kwargs: Any) -> Compose:
            k = self._input_dataset_key
            return Compose([
                LoadImaged(keys=k, reader=img_reader),
                EnsureChannelFirstd(keys=k),
                Orientationd(keys=k, axcodes="LPS"),
                Spacingd(keys=k, pixdim=spacing_xyz, mode="bilinear"),
                ScaleIntensityRanged(keys=k, a_min=window.a_min, a_max=window.a_max, b_min=window.b_min,
                                     b_max=window.b_max, clip=window.clip),
                Transposed(keys=k, indices=(0, 3, 2, 1)),  # C,x,y,z -> C,D,H,W (the model's order)
            ])

        def post_process(self, pre_transforms: Compose, *args: Any, **kwargs: Any) -> Compose:
            p = self._pred_dataset_key
            return Compose([
                Activationsd(keys=p, softmax=True),
                Invertd(keys=p, transform=pre_transforms, orig_keys=self._input_dataset_key, nearest_interp=False,
                        to_tensor=True),
                AsDiscreted(keys=p, argmax=True),
            ])

    rules = json.dumps({"selections": [{"name": "CT", "conditions": {
        "Modality": "(?i)CT", "ImageType": ["PRIMARY", "ORIGINAL", "AXIAL"], "SeriesDescription": series_regex}}]})
    labels = seg.foreground

    class StockApp(Application):
        def compose(self) -> None:
            ctx = AppContext({"input": str(input_dir), "output": str(output_dir), "model": str(model_file)})
            loader = _timed(DICOMDataLoaderOperator)(self, CountCondition(self, 1), input_folder=input_dir,
                                                     name="dicom_data_loader")
            selector = _timed(DICOMSeriesSelectorOperator)(self, rules=rules, name="series_selector")
            to_volume = _timed(DICOMSeriesToVolumeOperator)(self, name="series_to_volume")
            infer = _timed(StockSegOperator)(
                self, roi_size=sw.roi_size, pre_transforms=None, post_transforms=None, app_context=ctx,
                overlap=sw.overlap, sw_batch_size=sw.sw_batch_size, mode=sw.mode,
                model_path=model_file, name="monai_seg_inference")
            descriptions = [SegmentDescription(
                segment_label=lab.label, segmented_property_category=codes.SCT.AnatomicalStructure,
                segmented_property_type=codes.SCT.Hip, algorithm_name="stock SDK pipeline (bench)",
                algorithm_version="0") for lab in labels]
            writer = _timed(DICOMSegmentationWriterOperator)(self, segment_descriptions=descriptions,
                                                             output_folder=output_dir, name="dicom_seg_writer")
            self.add_flow(loader, selector, {("dicom_study_list", "dicom_study_list")})
            self.add_flow(selector, to_volume, {("study_selected_series_list", "study_selected_series_list")})
            self.add_flow(to_volume, infer, {("image", "image")})
            self.add_flow(infer, writer, {("seg_image", "seg_image")})
            self.add_flow(selector, writer, {("study_selected_series_list", "study_selected_series_list")})

    return StockApp()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.stock_app", description=__doc__.split("\n\n")[0])
    ap.add_argument("-i", "--input", type=Path, required=True)
    ap.add_argument("-o", "--output", type=Path, required=True)
    ap.add_argument("-m", "--models", type=Path, default=REPO / "models")
    ap.add_argument("--model", default="hip_bone_seg")
    ap.add_argument("--series-regex", default="(?i)NONCONTRAST", help="SeriesDescription rule of the selector")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    quiet_threads()
    preload_cudart()
    folder = a.models / a.model
    metadata = read_metadata(folder)
    a.output.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    app = build_app(a.input.resolve(), a.output.resolve(), folder / metadata.file, metadata,
                    a.series_regex)
    app.run()
    TIMINGS["total"] = round(time.perf_counter() - t0, 3)
    (a.output / "stock_timings.json").write_text(json.dumps(TIMINGS, indent=2) + "\n")
    segs = [p for p in a.output.rglob("*.dcm")]
    print(json.dumps({"timings_s": TIMINGS, "seg_files": len(segs)}))
    return 0 if segs else 1


if __name__ == "__main__":
    sys.exit(main())
