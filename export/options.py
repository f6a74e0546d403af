"""Command-line options as data, so that each method module declares its own next to its config
and export-engine registers every one exactly once.

A method lists its option groups: its own, then shared ones (the training loop's, the synthetic
anomalies of the feature-discriminator methods) that several methods list by the same object.
Each option's ``dest`` is a field of the config of every method that lists it; export-engine
refuses an option the chosen method's config does not have.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

Option = tuple[tuple[str, ...], dict[str, Any]]  # add_argument's (flags, keyword arguments)


@dataclass(frozen=True, eq=False)  # compared by identity: a shared group is one object
class OptionGroup:
    title: str  # "patchcore", "training": the help shows "<title> options (<methods>)"
    options: tuple[Option, ...]
