"""The external data files an ONNX model refers to, read from its protobuf without the onnx
package (not on the line box): ONNX Runtime loads every file a tensor names beside model.onnx,
so a bundle must list (and hash) each of them, or an overwritten weight file changes the model
unseen. Only the few message fields on the way to a tensor are decoded; weights are skipped."""

from __future__ import annotations

from collections.abc import Iterator

# (message, field number) → message type of that field, for the fields that can hold tensors.
_CHILDREN = {
    ("model", 7): "graph",
    ("model", 25): "function",
    ("function", 7): "node",
    ("graph", 1): "node",
    ("graph", 5): "tensor",
    ("graph", 15): "sparse",
    ("node", 5): "attribute",
    ("attribute", 5): "tensor",
    ("attribute", 6): "graph",
    ("attribute", 10): "tensor",
    ("attribute", 11): "graph",
    ("attribute", 22): "sparse",
    ("attribute", 23): "sparse",
    ("sparse", 1): "tensor",
    ("sparse", 2): "tensor",
    ("tensor", 13): "entry",  # TensorProto.external_data: key/value pairs, "location" among them
}
_MAX_DEPTH = 64  # subgraphs nest (If, Loop); deeper than any real model, bounded against a crafted one


class OnnxFormatError(ValueError):
    """Not a protobuf this reader can walk."""


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if i >= len(buf) or shift > 63:
            raise OnnxFormatError("truncated or malformed varint")
        b = buf[i]
        value |= (b & 0x7F) << shift
        i, shift = i + 1, shift + 7
        if not b & 0x80:
            return value, i


def _fields(buf: bytes, start: int, end: int) -> Iterator[tuple[int, int, int]]:
    """(field number, start, end) of every length-delimited field of one message."""
    i = start
    while i < end:
        key, i = _varint(buf, i)
        wire = key & 7
        if wire == 0:
            _, i = _varint(buf, i)
        elif wire in (1, 5):
            i += 8 if wire == 1 else 4
        elif wire == 2:
            n, i = _varint(buf, i)
            if i + n > end:
                raise OnnxFormatError("a field runs past the end of its message")
            yield key >> 3, i, i + n
            i += n
        else:
            raise OnnxFormatError(f"wire type {wire} (not written by ONNX)")
    if i != end:
        raise OnnxFormatError("a field runs past the end of its message")


def external_data_locations(buf: bytes) -> set[str]:
    """Every ``location`` a tensor of the model (graph, subgraphs, functions) names as its
    external data."""
    found: set[str] = set()

    def walk(kind: str, start: int, end: int, depth: int) -> None:
        if depth > _MAX_DEPTH:
            raise OnnxFormatError(f"messages nested deeper than {_MAX_DEPTH}")
        if kind == "entry":
            parts = {number: buf[s:e] for number, s, e in _fields(buf, start, end)}
            if parts.get(1) == b"location":
                found.add(parts.get(2, b"").decode("utf-8", "replace"))
            return
        for number, s, e in _fields(buf, start, end):
            child = _CHILDREN.get((kind, number))
            if child:
                walk(child, s, e, depth + 1)

    walk("model", 0, len(buf), 0)
    return found
