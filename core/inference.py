"""Network inference on tensors only (torch + MONAI): sliding-window segmentation and classification.

Kept free of SimpleITK and DICOM so that the GPU path can be exercised on its own (``bench/gpu_check.py``).
Arrays are D-H-W on the model grid (see ``core.segment`` for how that grid is made).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from core.model_metadata import ModelMetadata


@torch.no_grad()
def predict_probabilities(
    module: torch.nn.Module, image: np.ndarray, metadata: ModelMetadata, device: torch.device
) -> np.ndarray:
    """Softmax probabilities (C, D, H, W) float32 by MONAI sliding-window inference.

    ``roi_size`` (D-H-W voxels), ``overlap``, ``sw_batch_size`` and ``mode`` come from the segmentation model's
    ``sliding_window`` (:class:`core.model_metadata.SlidingWindow`).
    Mixed precision (float16 autocast) on CUDA, float32 on CPU.
    """
    from monai.inferers import sliding_window_inference

    sw = metadata.seg.sliding_window
    x = torch.from_numpy(image)[None].to(device)
    with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=device.type == "cuda"):
        logits = sliding_window_inference(
            x, roi_size=sw.roi_size, sw_batch_size=sw.sw_batch_size, predictor=module, overlap=sw.overlap,
            mode=sw.mode,
        )
    assert isinstance(logits, torch.Tensor)  # one network output (not a tuple or dict of them)
    return torch.softmax(logits.float(), dim=1)[0].cpu().numpy()


@torch.no_grad()
def predict_proba(
    module: torch.nn.Module, crop: np.ndarray, tabular: np.ndarray, device: torch.device
) -> np.ndarray:
    """Class probabilities (K,) float64 summing to 1, from one crop (C, D, H, W) and tabular vector (F,)."""
    img = torch.from_numpy(np.ascontiguousarray(crop, dtype=np.float32))[None].to(device)
    tab = torch.from_numpy(np.asarray(tabular, dtype=np.float32))[None].to(device)
    logits = module(img, tab).float()
    p = torch.softmax(logits, dim=1)[0].double().cpu().numpy()
    return p / p.sum()
