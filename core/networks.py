"""Network architectures, built from the ``architecture`` dict stored in each model's metadata.

The same builders serve training (``training/``) and documentation of the shipped weights; inference
loads the exported TorchScript and never needs these classes.
"""
from __future__ import annotations

from typing import Any

import torch
from monai.networks.nets import DenseNet, SegResNetDS
from torch import nn


def build_segmenter(arch: dict[str, Any]) -> nn.Module:
    """MONAI ``SegResNetDS`` (as in the published method), input (B, 1, D, H, W), output logits (B, C, D, H, W).

    In training mode it returns a list of deep-supervision outputs (full resolution first).
    """
    if arch.get("name") != "SegResNetDS":
        raise ValueError(f"unsupported segmentation architecture {arch.get('name')!r}")
    return SegResNetDS(
        spatial_dims=3,
        init_filters=int(arch["init_filters"]),
        in_channels=int(arch["in_channels"]),
        out_channels=int(arch["out_channels"]),
        blocks_down=tuple(arch["blocks_down"]),
        norm=arch.get("norm", "INSTANCE"),
        dsdepth=int(arch.get("dsdepth", 1)),
    )


class FusionClassifier(nn.Module):
    """A 3-D DenseNet image branch and/or z-scored tabular features, concatenated before an MLP head.

    Inputs: ``image`` (B, C, D, H, W) tumour crop, ``tabular`` (B, F) standardised features in the order of the
    metadata's ``features`` list. Output: logits (B, K). Either branch can be switched off (``use_image``,
    ``use_tabular``) to build the ablation variants with the same code; a switched-off branch ignores its input.
    ``tabular_index`` selects which tabular columns the model sees (e.g. clinical only).
    """

    tabular_index: torch.Tensor  # a registered buffer
    features: nn.Module
    pool: nn.Module

    def __init__(self, arch: dict[str, Any]) -> None:
        super().__init__()
        self.use_image = bool(arch.get("use_image", True))
        self.use_tabular = bool(arch.get("use_tabular", True))
        idx = list(arch.get("tabular_index", range(int(arch["n_tabular"]))))
        self.register_buffer("tabular_index", torch.tensor(idx if idx else [0], dtype=torch.long))
        n_tab = len(idx) if self.use_tabular else 0
        n_img = 0
        if self.use_image:
            dn = DenseNet(
                spatial_dims=3,
                in_channels=int(arch["in_channels"]),
                out_channels=1,
                init_features=int(arch["init_features"]),
                growth_rate=int(arch["growth_rate"]),
                block_config=tuple(arch["block_config"]),
                bn_size=int(arch.get("bn_size", 2)),
            )
            self.features = dn.features
            self.pool = nn.Sequential(nn.ReLU(), nn.AdaptiveAvgPool3d(1), nn.Flatten(1))
            n_img = dn.class_layers.out.in_features
        else:
            self.features = nn.Identity()
            self.pool = nn.Identity()
        hidden = list(arch.get("hidden", [64, 32]))
        layers: list[nn.Module] = []
        width = n_img + n_tab
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU(), nn.Dropout(float(arch.get("dropout", 0.2)))]
            width = h
        layers.append(nn.Linear(width, int(arch["n_classes"])))
        self.head = nn.Sequential(*layers)

    def forward(self, image: torch.Tensor, tabular: torch.Tensor) -> torch.Tensor:
        parts: list[torch.Tensor] = []
        if self.use_image:
            parts.append(self.pool(self.features(image)))
        if self.use_tabular:
            parts.append(tabular.index_select(1, self.tabular_index))
        return self.head(torch.cat(parts, dim=1))


def log_linear_pool(outputs: list[torch.Tensor], weights: torch.Tensor) -> torch.Tensor:
    """Log-linear pooling of class scores: ``sum_m weights[m] * log_softmax(outputs[m], dim=1)``.

    ``outputs``: one (B, K) tensor per member, logits or log-probabilities (``log_softmax`` normalises either);
    ``weights``: (M,), one per member. Returns (B, K) unnormalised log-probabilities: ``softmax`` of the result is
    proportional to the product of the members' probabilities, each raised to its weight. The one implementation
    of the classifier's fusion (:class:`LateFusion`, ``validation.fusion_weight``).
    """
    if len(outputs) != int(weights.numel()):
        raise ValueError(f"{len(outputs)} member outputs but {int(weights.numel())} weights")
    out = torch.zeros((), dtype=outputs[0].dtype, device=outputs[0].device)
    for i, x in enumerate(outputs):
        out = out + weights[i].to(x.dtype) * torch.log_softmax(x, dim=1)
    return out


class LateFusion(nn.Module):
    """Late fusion of single-modality classifiers: the normalised, weighted product of their class posteriors.

    Output logits (B, K) = sum over members of ``w_m * log_softmax(member(image, tabular))``, so that
    ``softmax(output)`` is proportional to the product of the members' probabilities, each raised to its weight
    (log-linear pooling). Equal weights of 1 (the default) are exact Bayes fusion for modalities conditionally
    independent given the class, under the balanced class prior the members are trained with; a weight below 1
    tempers a member whose posteriors are overconfident on the data the model meets. Each member sees the same
    inputs and uses only its own modality (``FusionClassifier`` with a branch switched off). ``weights`` is kept
    as the buffer ``weights`` (float32, one per member, in member order), so it travels with the exported model.
    """

    weights: torch.Tensor

    def __init__(self, members: list[nn.Module], weights: list[float] | None = None) -> None:
        super().__init__()
        if len(members) < 2:
            raise ValueError("late fusion needs at least two member classifiers")
        w = [1.0] * len(members) if weights is None else [float(x) for x in weights]
        if len(w) != len(members):
            raise ValueError(f"late fusion has {len(members)} members but {len(w)} weights")
        if not all(x > 0 and x == x and x != float("inf") for x in w):
            raise ValueError(f"late fusion weights must be finite and positive, got {w}")
        self.members = nn.ModuleList(members)
        self.register_buffer("weights", torch.tensor(w, dtype=torch.float32))

    def forward(self, image: torch.Tensor, tabular: torch.Tensor) -> torch.Tensor:
        return log_linear_pool([m(image, tabular) for m in self.members], self.weights)


class MirrorAveraged(nn.Module):
    """Test-time augmentation of an image classifier: the mean log-posterior of the crop and its mirror image.

    The crop is D-H-W in canonical LPS (``core.classify.tumour_crop``); the mirror flips W, the patient's
    left-right axis, which is also the flip the image model is trained with. Output: (B, K) log-probabilities
    ``(log_softmax(m(x)) + log_softmax(m(flip_W(x)))) / 2``; the tabular input is passed through unchanged.
    """

    def __init__(self, member: nn.Module) -> None:
        super().__init__()
        self.member = member

    def forward(self, image: torch.Tensor, tabular: torch.Tensor) -> torch.Tensor:
        a = torch.log_softmax(self.member(image, tabular), dim=1)
        b = torch.log_softmax(self.member(torch.flip(image, dims=[4]), tabular), dim=1)
        return 0.5 * (a + b)
