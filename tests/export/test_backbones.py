from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from export.backbones import (
    BackboneWeightsError,
    efficientnet_lite0_classifier,
    efficientnet_lite0_weights,
    load_backbone,
    map_state_dict_by_order,
)
from export.features import PatchFeatures, adaptive_pool_matrix

IMAGENET_CATS = set(range(281, 286))  # tabby, tiger cat, Persian, Siamese, Egyptian cat
IMAGENET_COFFEE = {967, 968}  # espresso, cup


@pytest.fixture(scope="module")
def lite0():
    return load_backbone("efficientnet_lite0")


def top5(classifier: torch.nn.Module, rgb: np.ndarray) -> set[int]:
    x = cv2.resize(rgb, (224, 224), interpolation=cv2.INTER_AREA)
    t = (torch.from_numpy(x).permute(2, 0, 1).float() / 255 - 0.5) / 0.5
    with torch.no_grad():
        return set(classifier(t[None]).topk(5).indices[0].tolist())


def test_lite0_weights_classify_real_photos() -> None:
    # The checkpoint's keys are mapped by position; only a correct mapping of all 296
    # tensors (including the 'same'-padding convs) recognises real photographs.
    import skimage.data

    classifier = efficientnet_lite0_classifier()
    assert top5(classifier, skimage.data.chelsea()) & IMAGENET_CATS
    assert top5(classifier, skimage.data.coffee()) & IMAGENET_COFFEE


def test_lite0_backbone_describes_itself_and_matches_timm(lite0) -> None:
    import timm

    info = lite0.info
    assert (info.name, info.channels, info.strides) == ("efficientnet_lite0", (40, 112), (8, 16))
    assert info.mean == info.std == (0.5, 0.5, 0.5)
    assert Path(info.weights) == efficientnet_lite0_weights()

    reference = timm.create_model(
        "tf_efficientnet_lite0", pretrained=False, features_only=True, out_indices=(2, 3)
    ).eval()
    trained = efficientnet_lite0_classifier().state_dict()
    reference.load_state_dict({name: trained[name] for name in reference.state_dict()})
    x = torch.randn(2, 3, 96, 128)
    with torch.no_grad():
        ours, theirs = lite0(x), reference(x)
    assert [tuple(f.shape) for f in ours] == [(2, 40, 12, 16), (2, 112, 6, 8)]
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


def test_backbone_stays_frozen(lite0) -> None:
    lite0.train()
    assert not lite0.training and not any(m.training for m in lite0.modules())
    assert not any(p.requires_grad for p in lite0.parameters())
    with pytest.raises(ValueError, match="divisible by 16"):
        lite0(torch.zeros(1, 3, 100, 100))


def test_state_dict_mapping_refuses_the_wrong_file() -> None:
    target = {"a.weight": torch.zeros(4, 3), "a.bias": torch.zeros(4)}
    mapped = map_state_dict_by_order({"x": torch.ones(4, 3), "y": torch.ones(4)}, target, "w.pth")
    assert list(mapped) == ["a.weight", "a.bias"] and mapped["a.weight"].sum() == 12
    with pytest.raises(BackboneWeightsError, match="w.pth: 1 tensors, the architecture has 2"):
        map_state_dict_by_order({"x": torch.ones(4, 3)}, target, "w.pth")
    with pytest.raises(BackboneWeightsError, match=r"tensor #1 y has shape \(5,\).*a.bias needs \(4,\)"):
        map_state_dict_by_order({"x": torch.ones(4, 3), "y": torch.ones(5)}, target, "w.pth")


def test_wide_resnet_without_weights_says_where_it_looked(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(BackboneWeightsError) as err:
        load_backbone("wide_resnet50_2")
    message = str(err.value)
    assert str(tmp_path / "hub" / "checkpoints") in message
    assert "wide_resnet50_2-95faca4d.pth" in message and "--backbone-weights" in message
    with pytest.raises(BackboneWeightsError, match="no such file"):
        load_backbone("wide_resnet50_2", tmp_path / "absent.pth")


@pytest.mark.slow
def test_wide_resnet_loads_a_weights_file_from_path_or_cache(
    tmp_path: Path, monkeypatch, wide_resnet_weights: Path
) -> None:
    from torchvision.models import wide_resnet50_2
    from torchvision.models.feature_extraction import create_feature_extractor

    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    (cache / "wide_resnet50_2-95faca4d.pth").symlink_to(wide_resnet_weights)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    backbone = load_backbone("wide_resnet50_2")
    assert backbone.info.channels == (512, 1024) and backbone.info.weights.endswith("95faca4d.pth")
    assert backbone.info.mean == (0.485, 0.456, 0.406)

    net = wide_resnet50_2(weights=None).eval()
    net.load_state_dict(torch.load(wide_resnet_weights, weights_only=True))
    reference = create_feature_extractor(net, ["layer2", "layer3"])
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ours, theirs = backbone(x), reference(x)
    assert [tuple(f.shape) for f in ours] == [(1, 512, 8, 8), (1, 1024, 4, 4)]
    torch.testing.assert_close(ours[0], theirs["layer2"])
    torch.testing.assert_close(ours[1], theirs["layer3"])

    assert load_backbone("wide_resnet50_2", wide_resnet_weights).info.weights == str(wide_resnet_weights)
    with pytest.raises(BackboneWeightsError, match="do not fit wide_resnet50_2"):
        load_backbone("wide_resnet50_2", efficientnet_lite0_weights())
    with pytest.raises(BackboneWeightsError, match="320 tensors, the architecture has 296"):
        load_backbone("efficientnet_lite0", wide_resnet_weights)


def patchcore_reference(levels: list[torch.Tensor], pretrain_dim: int, target_dim: int) -> torch.Tensor:
    """PatchCore's own formulation (patchcore/patchcore.py, common.py): unfold 3×3, upsample
    the unfolded deeper levels, adaptive_avg_pool1d per level, stack, adaptive_avg_pool1d.
    Returns [B, target_dim, h, w]."""
    batch = len(levels[0])
    grid = levels[0].shape[-2:]
    unfolded = []
    for i, f in enumerate(levels):
        c, (h, w) = f.shape[1], f.shape[-2:]
        u = F.unfold(f, kernel_size=3, padding=1).reshape(batch, c, 3, 3, h, w)
        if i:
            u = F.interpolate(u.reshape(batch, c * 9, h, w), size=grid, mode="bilinear", align_corners=False).reshape(
                batch, c, 3, 3, *grid
            )
        unfolded.append(u.permute(0, 4, 5, 1, 2, 3).reshape(-1, c * 9))  # [B·h·w, C·9]
    pooled = [F.adaptive_avg_pool1d(u[:, None], pretrain_dim)[:, 0] for u in unfolded]
    stacked = torch.stack(pooled, dim=1).reshape(len(pooled[0]), 1, -1)
    out = F.adaptive_avg_pool1d(stacked, target_dim)[:, 0]
    return out.reshape(batch, *grid, target_dim).permute(0, 3, 1, 2)


def native_reference(levels: list[torch.Tensor]) -> torch.Tensor:
    """The narrow-backbone rule in PatchCore's terms: each level's unfolded patch pooled to
    its own width, levels concatenated."""
    grid = levels[0].shape[-2:]
    maps = []
    for f in levels:
        c, (h, w) = f.shape[1], f.shape[-2:]
        u = F.unfold(f, kernel_size=3, padding=1).transpose(1, 2)  # [B, h·w, C·9]
        m = F.adaptive_avg_pool1d(u.reshape(-1, 1, c * 9), c).reshape(len(f), h, w, c).permute(0, 3, 1, 2)
        maps.append(F.interpolate(m, size=grid, mode="bilinear", align_corners=False))
    return torch.cat(maps, dim=1)


def test_adaptive_pool_matrix_is_adaptive_avg_pool1d() -> None:
    x = torch.randn(5, 37, dtype=torch.float64)
    for n_out in (1, 7, 12, 37, 50):
        torch.testing.assert_close(
            x @ adaptive_pool_matrix(37, n_out).T, F.adaptive_avg_pool1d(x[:, None], n_out)[:, 0]
        )


@pytest.mark.parametrize(
    ("channels", "pretrain_dim", "target_dim"),
    [
        ((6, 10), 12, 9),  # uneven bins everywhere
        ((16, 32), 48, 48),  # equal widths take the reference path (WRN50 → SimpleNet)
        ((64, 128), 96, 64),  # WRN50 → PatchCore's proportions, scaled by 1/8
    ],
)
def test_patch_features_equal_patchcore_unfold_and_pooling(channels, pretrain_dim, target_dim) -> None:
    torch.manual_seed(0)
    levels = [torch.randn(2, channels[0], 8, 6), torch.randn(2, channels[1], 4, 3)]
    front = PatchFeatures(channels, pretrain_dim, target_dim)
    assert not front.native and front.dim == target_dim
    with torch.no_grad():
        torch.testing.assert_close(
            front(levels), patchcore_reference(levels, pretrain_dim, target_dim), rtol=1e-5, atol=1e-5
        )


def test_narrow_backbone_keeps_native_width() -> None:
    torch.manual_seed(0)
    levels = [torch.randn(2, 40, 8, 8), torch.randn(2, 112, 4, 4)]
    front = PatchFeatures((40, 112), 1536, 1024)
    assert front.native and front.dim == 152
    with torch.no_grad():
        torch.testing.assert_close(front(levels), native_reference(levels), rtol=1e-5, atol=1e-5)
