"""core.inference: the forward-pass precision a segmentation model runs in, and what bfloat16 changes."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import MODELS

from core.inference import autocast_dtype, cpu_has_native_bf16, predict_probabilities
from core.models import load_model
from validation.model_grid import with_cpu_precision

pytestmark = pytest.mark.unit


def test_autocast_dtype_follows_the_model_setting_and_the_cpu() -> None:
    meta = load_model(MODELS, "tumour_seg").metadata
    cpu = torch.device("cpu")
    assert autocast_dtype(with_cpu_precision(meta, "fp32"), cpu) == torch.float32
    assert autocast_dtype(with_cpu_precision(meta, "bf16"), cpu) == (
        torch.bfloat16 if cpu_has_native_bf16() else torch.float32)
    assert autocast_dtype(meta, torch.device("cuda")) == torch.float16   # CUDA: float16 whatever the CPU setting


@pytest.mark.skipif(not cpu_has_native_bf16(), reason="this CPU has no native bfloat16: the model runs in float32")
def test_bfloat16_sliding_window_agrees_with_float32() -> None:
    """The shipped hip-bone model on a pelvis-like block (bone ring of 700 HU in 40 HU soft tissue, air outside, a
    little noise): bfloat16 probabilities within 0.05 of float32 on 99.5 % of voxels, labels equal on 99.5 %."""
    model = load_model(MODELS, "hip_bone_seg")
    rng = np.random.default_rng(0)
    d, h, w = 48, 100, 100
    zz, yy, xx = np.mgrid[:d, :h, :w]
    r = np.hypot(yy - h / 2, xx - w / 2)
    hu = np.where(r < 45, 40.0, -1000.0) + np.where((r > 25) & (r < 31), 660.0, 0.0)
    hu = (hu + rng.normal(0, 15, hu.shape)).astype(np.float32)
    from core.segment import scale_intensity
    image = scale_intensity(hu, model.metadata.seg.intensity)[None]
    cpu = torch.device("cpu")
    p32 = predict_probabilities(model.module, image, with_cpu_precision(model.metadata, "fp32"), cpu)
    p16 = predict_probabilities(model.module, image, with_cpu_precision(model.metadata, "bf16"), cpu)
    assert p16.dtype == np.float32 and p16.shape == p32.shape
    assert not np.array_equal(p16, p32)          # bfloat16 did run: the forward passes were not float32
    assert np.allclose(p16.sum(0), 1.0, atol=1e-4)
    assert np.mean(np.abs(p16 - p32).max(0) < 0.05) >= 0.995
    assert np.mean(p16.argmax(0) == p32.argmax(0)) >= 0.995


def test_left_right_flip_average_is_the_mean_of_the_plain_and_the_mirrored_pass() -> None:
    """``flip_average: [left_right]``: the softmax of the plain pass and that of the pass on the image mirrored along
    W (the patient's left-right on the canonical grid), mirrored back, averaged. A real, deliberately asymmetric
    network (a 3-D convolution whose kernel weighs the left neighbour only) makes the two passes differ."""
    from dataclasses import replace
    torch.manual_seed(0)
    net = torch.nn.Conv3d(1, 2, kernel_size=3, padding=1, bias=False)
    with torch.no_grad():
        net.weight.zero_()
        net.weight[1, 0, 1, 1, 0] = 8.0   # channel 1 = the voxel to the left (W - 1) of each voxel
    net.eval()
    meta = with_cpu_precision(load_model(MODELS, "tumour_seg").metadata, "fp32")
    sw = replace(meta.seg.sliding_window, roi_size=(8, 16, 16), overlap=0.25, mode="constant", flip_average=())
    plain = replace(meta, segmentation=replace(meta.seg, sliding_window=sw))
    flipped = replace(meta, segmentation=replace(meta.seg, sliding_window=replace(sw, flip_average=("left_right",))))
    rng = np.random.default_rng(1)
    image = rng.uniform(0, 1, size=(1, 10, 20, 24)).astype(np.float32)
    cpu = torch.device("cpu")
    p = predict_probabilities(net, image, plain, cpu)
    mirrored = predict_probabilities(net, np.ascontiguousarray(image[..., ::-1]), plain, cpu)[..., ::-1]
    both = predict_probabilities(net, image, flipped, cpu)
    assert both.shape == p.shape == (2, 10, 20, 24)
    np.testing.assert_allclose(both, (p + mirrored) / 2, atol=1e-6)
    assert np.allclose(both.sum(0), 1.0, atol=1e-5)
    assert np.abs(both - p).max() > 0.1        # the mirrored pass did change the result
    assert flipped.seg.sliding_window.to_dict()["flip_average"] == ["left_right"]
    assert "flip_average" not in plain.seg.sliding_window.to_dict()
