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


def cpu_has_native_bf16() -> bool:
    """Whether this CPU does bfloat16 arithmetic natively (AVX512-BF16 or AMX, as oneDNN reports it); elsewhere
    bfloat16 autocast is emulated and slower than float32."""
    return bool(torch.backends.mkldnn.is_available()  # type: ignore[no-untyped-call]
                and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def autocast_dtype(metadata: ModelMetadata, device: torch.device) -> torch.dtype:
    """The dtype a segmentation model's forward passes run in on ``device``: float16 autocast on CUDA; on CPU
    bfloat16 autocast if the model's ``sliding_window.cpu_precision`` is ``bf16`` and the CPU does bfloat16
    natively (:func:`cpu_has_native_bf16`), float32 otherwise."""
    if device.type == "cuda":
        return torch.float16
    if metadata.seg.sliding_window.cpu_precision == "bf16" and cpu_has_native_bf16():
        return torch.bfloat16
    return torch.float32


def forward_precision(metadata: ModelMetadata, device: torch.device) -> str:
    """:func:`autocast_dtype` as its name ("float32", "bfloat16", "float16"), as ``result.json`` records it."""
    return str(autocast_dtype(metadata, device)).removeprefix("torch.")


@torch.no_grad()
def predict_probabilities(
    module: torch.nn.Module, image: np.ndarray, metadata: ModelMetadata, device: torch.device
) -> np.ndarray:
    """Softmax probabilities (C, D, H, W) float32 by MONAI sliding-window inference.

    ``roi_size`` (D-H-W voxels), ``overlap``, ``sw_batch_size`` and ``mode`` come from the segmentation model's
    ``sliding_window`` (:class:`core.model_metadata.SlidingWindow`); the forward passes run in
    :func:`autocast_dtype` (float16 on CUDA; bfloat16 or float32 on CPU, as the model's ``cpu_precision`` says and
    the CPU allows); blending and softmax in float32. With ``flip_average`` (e.g. ``left_right``) the image is also
    run mirrored along each listed axis, and the softmax of each pass, mirrored back, is averaged with the plain one.
    """
    from monai.inferers import sliding_window_inference

    sw = metadata.seg.sliding_window
    x = torch.from_numpy(image)[None].to(device)
    dtype = autocast_dtype(metadata, device)
    probs: torch.Tensor | None = None
    for axis in (None, *(sw.FLIP_AXES[f] + 1 for f in sw.flip_average)):  # +1: the batch axis in front
        xi = x if axis is None else torch.flip(x, dims=(axis,))
        with torch.autocast(device_type=device.type, dtype=dtype, enabled=dtype != torch.float32):
            logits = sliding_window_inference(
                xi, roi_size=sw.roi_size, sw_batch_size=sw.sw_batch_size, predictor=module, overlap=sw.overlap,
                mode=sw.mode,
            )
        assert isinstance(logits, torch.Tensor)  # one network output (not a tuple or dict of them)
        p = torch.softmax(logits.float(), dim=1)
        if axis is not None:
            p = torch.flip(p, dims=(axis,))
        probs = p if probs is None else probs + p
        del logits, p
    assert probs is not None
    return (probs / (1 + len(sw.flip_average)))[0].cpu().numpy()


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
