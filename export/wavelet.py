"""Wavelet down-sampling for CNNs (WaveCNet: Li et al., "Wavelet Integrated CNNs for
Noise-Robust Image Classification", CVPR 2020): every down-sampling of the network keeps
only the low-frequency (LL) component of a one-level 2-D discrete wavelet transform, a
low-pass filter then sub-sampling, instead of sub-sampling alone (which aliases noise and
fine texture into the coarse features):

    max-pooling       → DWT-LL
    stride-2 conv     → DWT-LL ∘ the same conv at stride 1
    stride-2 avg pool → DWT-LL

The LL component is a depthwise convolution with the separable 2-D filter ``h ⊗ h`` (``h``
the wavelet's 1-D low-pass taps), stride 2: one plain Conv in ONNX, nothing a runtime or
TensorRT needs to know about. The taps are hard-coded (Daubechies' scaling filters,
orthonormal: they sum to √2, so the 2-D filter's DC gain is 2); no wavelet package is needed.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

# Scaling (low-pass) filters h[0..L-1] of the orthogonal wavelets, normalised to Σh = √2
# (Daubechies, "Ten Lectures on Wavelets", table 6.1; PyWavelets' rec_lo), written in the
# closed forms of the 2- and 3-vanishing-moment filters: exact to float64, where the usual
# 16-digit decimal tables are off by up to 4e-12 for db3. Decimal values:
#   haar  0.7071067811865475, 0.7071067811865475
#   db2   0.4829629131445341, 0.8365163037378077, 0.2241438680420134, -0.1294095225512603
#   db3   0.3326705529500827, 0.8068915093110928, 0.4598775021184915, -0.1350110200102546,
#         -0.0854412738820267, 0.0352262918857096
_R2, _R3, _R10 = math.sqrt(2.0), math.sqrt(3.0), math.sqrt(10.0)
_A = math.sqrt(5 + 2 * _R10)
LOWPASS: dict[str, tuple[float, ...]] = {
    "haar": (1 / _R2, 1 / _R2),
    "db2": tuple(v / (4 * _R2) for v in (1 + _R3, 3 + _R3, 3 - _R3, 1 - _R3)),
    "db3": tuple(
        v * _R2 / 32
        for v in (
            1 + _R10 + _A,
            5 + _R10 + 3 * _A,
            10 - 2 * _R10 + 2 * _A,
            10 - 2 * _R10 - 2 * _A,
            5 + _R10 - 3 * _A,
            1 + _R10 - _A,
        )
    ),
}
WAVELETS = tuple(LOWPASS)


class WaveletLowpass(nn.Module):
    """The LL band of a one-level 2-D DWT, per channel: ``[B, C, H, W]`` →
    ``[B, C, H/2, W/2]`` for even H, W (as ResNet's stride-2 ops; odd sizes give floor(H/2)).

    ``y[i, j] = Σ_k Σ_l h[k] h[l] x[2i - p + k, 2j - p + l]`` with ``p = L/2 - 1`` rows and
    columns of zeros around the input (``L`` taps): each output cell is centred on the 2×2
    input block it replaces, as average pooling's is. Boundary: zero padding, inside the Conv
    (one ONNX op; the network's own convolutions zero-pad too), so near the border of a
    constant image a longer wavelet's output falls off; Haar needs no padding at all.
    The filter is a buffer: it follows ``.to(device)`` and ``.half()``, it is saved in
    checkpoints (a Haar checkpoint does not load into a db2 network) and it is never trained."""

    filter: torch.Tensor

    def __init__(self, channels: int, wavelet: str = "haar") -> None:
        super().__init__()
        if wavelet not in LOWPASS:
            raise ValueError(f"wavelet {wavelet!r}: choose from {', '.join(WAVELETS)}")
        taps = torch.tensor(LOWPASS[wavelet], dtype=torch.float32)
        self.channels, self.wavelet, self.padding = channels, wavelet, len(taps) // 2 - 1
        self.register_buffer("filter", torch.outer(taps, taps).expand(channels, 1, -1, -1).contiguous())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.filter, stride=2, padding=self.padding, groups=self.channels)

    def extra_repr(self) -> str:
        return f"{self.channels}, wavelet={self.wavelet!r}"


def _stride_two(stride: int | tuple[int, ...]) -> bool:
    return (stride, stride) == (2, 2) if isinstance(stride, int) else tuple(stride) == (2, 2)


def wavelet_downsampling(net: nn.Module, wavelet: str) -> int:
    """Replace, in place, every stride-2 down-sampling of ``net`` (a torchvision ResNet, or
    any CNN built of Conv2d and pooling layers) by WaveCNet's: a max- or average-pooling
    layer becomes a WaveletLowpass; a stride-2 convolution runs at stride 1 followed by one,
    except a 1×1 one (ResNet's downsample shortcut), which runs at stride 1 after one: a
    pointwise convolution without bias commutes with a per-channel filter, so the result is
    the same at a quarter of its cost. Feature-map sizes stay those of ``net``. Call it before
    loading a checkpoint of the converted network or building an optimizer over it (the
    convolutions' weights are kept, so their initialisation is the original one). Returns
    how many layers were replaced."""
    if wavelet not in LOWPASS:
        raise ValueError(f"wavelet {wavelet!r}: choose from {', '.join(WAVELETS)}")
    replacements: list[tuple[nn.Module, str, nn.Module]] = []
    for parent in net.modules():
        for name, child in parent.named_children():
            if isinstance(child, nn.Conv2d) and _stride_two(child.stride):
                if child.padding_mode != "zeros" or child.dilation != (1, 1):
                    raise ValueError(f"{name}: only zero-padded, undilated convolutions are converted")
                child.stride = (1, 1)
                if child.kernel_size == (1, 1) and child.bias is None:
                    new: nn.Module = nn.Sequential(WaveletLowpass(child.in_channels, wavelet), child)
                else:
                    new = nn.Sequential(child, WaveletLowpass(child.out_channels, wavelet))
                replacements.append((parent, name, new))
            elif isinstance(child, (nn.MaxPool2d, nn.AvgPool2d)) and _stride_two(child.stride):
                replacements.append((parent, name, WaveletLowpass(_channels_into(net, child), wavelet)))
    for parent, name, new in replacements:
        setattr(parent, name, new)
    return len(replacements)


def _channels_into(net: nn.Module, pool: nn.Module) -> int:
    """Channels a pooling layer sees: those of the last convolution or BatchNorm before it,
    in ``net``'s registration order (ResNet's stem: conv1, bn1, relu, maxpool)."""
    channels = None
    for module in net.modules():
        if module is pool:
            break
        if isinstance(module, nn.BatchNorm2d):
            channels = module.num_features
        elif isinstance(module, nn.Conv2d):
            channels = module.out_channels
    if channels is None:
        raise ValueError("a pooling layer before any convolution: its channels are unknown")
    return channels
