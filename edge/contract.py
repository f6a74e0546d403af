"""The engine contract, checked on the graph a backend loaded against the bundle.yaml that came
with it: ``image`` uint8 [B, H, W, 3] in; ``anomaly_map`` float [B, 1, H, W] and ``score``
float [B] out, B dynamic, H and W those of bundle.yaml. A graph that breaks it loads all the
same in ONNX Runtime, then fails or misjudges part after part (a fixed batch of 1 makes every
batch of more parts ERROR; a smaller map puts regions in the wrong place)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

Dim = int | str | None  # a fixed size, a symbolic one, or unknown
_FLOATS = ("float32", "float16")  # outputs: the backends hand on float32 either way


@dataclass(frozen=True, slots=True)
class Tensor:
    name: str
    dtype: str  # numpy's name: uint8, float32, ...
    shape: Sequence[Dim]


def _dims(t: Tensor, expected: tuple[Dim, ...]) -> list[str]:
    """Where ``t``'s declared shape breaks ``expected`` ("B": must be dynamic, an int: must be that size
    when the graph fixes it)."""
    if len(t.shape) != len(expected):
        return [f"{t.name} has rank {len(t.shape)} ({list(t.shape)}), the contract {len(expected)} ({list(expected)})"]
    problems = []
    for axis, (got, want) in enumerate(zip(t.shape, expected)):
        if want == "B" and isinstance(got, int):
            problems.append(f"{t.name} has a fixed batch of {got} (axis 0 must be dynamic; re-export with one)")
        elif isinstance(want, int) and isinstance(got, int) and got != want:
            problems.append(f"{t.name} axis {axis} is {got}, bundle.yaml's input needs {want}")
    return problems


def declared_problems(inputs: list[Tensor], outputs: list[Tensor], height: int, width: int) -> list[str]:
    """What the graph's declared inputs and outputs break in the contract, for a bundle.yaml of
    ``height`` × ``width``; empty when they follow it."""
    by_name = {t.name: t for t in outputs}
    if [t.name for t in inputs] != ["image"] or not {"anomaly_map", "score"} <= set(by_name):
        return [f"inputs {[t.name for t in inputs]} / outputs {list(by_name)} are not image → anomaly_map, score"]
    wanted = [
        (inputs[0], ("uint8",), ("B", height, width, 3)),
        (by_name["anomaly_map"], _FLOATS, ("B", 1, height, width)),
        (by_name["score"], _FLOATS, ("B",)),
    ]
    problems = []
    for tensor, dtypes, shape in wanted:
        if tensor.dtype not in dtypes:
            problems.append(f"{tensor.name} is {tensor.dtype}, the contract {' or '.join(dtypes)}")
        problems += _dims(tensor, shape)
    return problems


def output_problems(maps: np.ndarray, scores: np.ndarray, batch: int, height: int, width: int) -> list[str]:
    """What a probe batch's outputs break (the shapes a graph declares may be symbolic)."""
    shapes = {"anomaly_map": maps.shape, "score": scores.shape}
    if shapes != {"anomaly_map": (batch, 1, height, width), "score": (batch,)}:
        return [
            f"a batch of {batch} gave outputs {shapes}, the contract ({batch}, 1, {height}, {width}) and ({batch},)"
        ]
    return []
