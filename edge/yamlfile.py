"""Every YAML file the tools read (line configs, bundle.yaml, calibration.yaml, method configs),
read with bounds: a file of a few hundred bytes can otherwise expand to 10^8 nodes through its
aliases (a "billion laughs"), or refer to itself, and hang whatever walks it next (a JSON dump,
a report). Safe tags only (yaml.safe_load)."""

from __future__ import annotations

from pathlib import Path

import yaml

MAX_BYTES = 4 * 2**20  # far above any config or bundle.yaml written by these tools
MAX_NODES = 1_000_000  # values counted as often as aliases repeat them


class YamlBoundError(ValueError):
    """Too large, too many expanded nodes or a recursive alias; the message says which."""


def _expanded_nodes(data: object) -> int:
    """How many values walking ``data`` visits, each alias counted in full, computed once per
    shared object (so a bomb is measured without being expanded)."""
    sizes: dict[int, int] = {}
    open_ids: set[int] = set()

    def size(x: object) -> int:
        if not isinstance(x, (dict, list)):
            return 1
        if id(x) in sizes:
            return sizes[id(x)]
        if id(x) in open_ids:
            raise YamlBoundError("an alias refers to a value that contains it (a recursive structure)")
        open_ids.add(id(x))
        children = [*x.keys(), *x.values()] if isinstance(x, dict) else x
        total = 1
        for child in children:
            total += size(child)
            if total > MAX_NODES:
                raise YamlBoundError(f"its aliases expand to more than {MAX_NODES} values (an alias bomb?)")
        open_ids.discard(id(x))
        sizes[id(x)] = total
        return total

    return size(data)


def load_yaml_text(text: str) -> object:
    """yaml.safe_load within the bounds; YamlBoundError beyond them, yaml.YAMLError as usual."""
    if len(text) > MAX_BYTES:
        raise YamlBoundError(f"{len(text)} characters, more than the {MAX_BYTES} read")
    data = yaml.safe_load(text)
    _expanded_nodes(data)
    return data


def read_yaml_file(path: Path) -> object:
    """The file's YAML within the bounds (OSError, UnicodeDecodeError, yaml.YAMLError and
    YamlBoundError for the caller to word); its size is checked before it is read."""
    if path.stat().st_size > MAX_BYTES:
        raise YamlBoundError(f"{path.stat().st_size} bytes, more than the {MAX_BYTES} read")
    return load_yaml_text(path.read_text(encoding="utf-8"))
