"""PatchCore's distance in fp16, the precision a TensorRT fp16 engine may run it in: centred on
the bank mean it stays accurate; the textbook ‖a‖² − 2ab + ‖b‖² on raw backbone features does not.
PyTorch's CPU fp16 arithmetic stands in for a GPU's (fp16 storage, wider accumulation)."""

from __future__ import annotations

import torch

from export.patchcore import NearestNeighbourScorer

DIM, BANK, SIDE = 152, 2000, 16


def backbone_like_features() -> tuple[torch.Tensor, torch.Tensor]:
    """(bank [M, D], patch features [P, D]): after ReLU-like activations every channel has a
    large common mean and a small spread, which is what makes the expanded form cancel."""
    g = torch.Generator().manual_seed(0)
    offset = torch.rand(DIM, generator=g) * 4 + 2
    bank = offset + torch.randn(BANK, DIM, generator=g) * 0.5
    patches = offset + torch.randn(SIDE * SIDE, DIM, generator=g) * 0.5
    patches[:20] += torch.randn(20, DIM, generator=g) * 1.5  # a few anomalous patches
    return bank, patches


def relative_error(distances: torch.Tensor, exact: torch.Tensor) -> float:
    return ((distances.double() - exact).abs() / exact).max().item()


def test_centred_distance_keeps_fp16_accurate_where_the_expanded_form_does_not() -> None:
    bank, patches = backbone_like_features()
    exact = torch.cdist(patches.double(), bank.double()).min(dim=1).values

    scorer = NearestNeighbourScorer(bank, chunk_size=512).half()
    as_image = patches.T.reshape(1, DIM, SIDE, SIDE).half()
    centred = scorer(as_image).flatten()
    assert centred.dtype == torch.float16
    assert relative_error(centred, exact) < 3e-3

    a, b = patches.half(), bank.half()
    expanded = ((a * a).sum(1)[:, None] - 2 * a @ b.T + (b * b).sum(1)[None]).amin(1).clamp_min(0).sqrt()
    assert relative_error(expanded, exact) > 1e-2  # the failure the centring prevents


def test_reweighting_weight_keeps_fp16_accurate() -> None:
    # Eq. 7's weight from the fp16 scorer (argmax, argmin, gathered distances, softmax) against
    # the same steps in float64. Distances here are ~15: exp of them alone would overflow fp16
    # (max 65504 = e^11), so this also fails a softmax that does not subtract its maximum.
    bank, patches = backbone_like_features()
    b = 9
    scorer = NearestNeighbourScorer(bank, chunk_size=512, reweight_neighbours=b).half()
    images = torch.stack([patches, patches.roll(7, dims=0).flip(1)])  # two different images
    as_images = images.transpose(1, 2).reshape(2, DIM, SIDE, SIDE).half()
    _, weight = scorer(as_images)
    assert weight.dtype == torch.float16 and torch.isfinite(weight).all()

    exact_weights = []
    for image in images.double():
        to_bank = torch.cdist(image, bank.double())
        row = to_bank[to_bank.min(dim=1).values.argmax()]
        star = row.argmin()
        support = torch.cdist(bank.double()[star : star + 1], bank.double())[0].argsort()[:b]
        exact_weights.append(1.0 - torch.softmax(row[support], dim=0)[0])
    exact = torch.stack(exact_weights)
    assert row.max() > 11  # the overflow case is exercised
    assert (weight.double() - exact).abs().max() < 2e-3
