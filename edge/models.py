"""Model lifetime: each bundle loaded once on its backend, shared by the streams that name it,
closed once no stream uses it any more."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from edge.backends import Backend, load_backend
from edge.bundle import Bundle, load_bundle
from edge.config import ConfigError, LineConfig
from edge.inspector import judge_for
from edge.verdict import Judge


@dataclass(slots=True)
class Model:
    """A bundle on its backend; streams that name the same bundle share one."""

    bundle: Bundle
    backend: Backend


def distinct(models: Iterable[Model]) -> list[Model]:
    return list({id(m): m for m in models}.values())


def close_models(models: Iterable[Model]) -> None:
    for model in distinct(models):
        model.backend.close()


def close_unused(models: Iterable[Model], in_use: Iterable[Model]) -> None:
    """Closes each of ``models`` that is not one of ``in_use``."""
    keep = {id(m) for m in in_use}
    close_models(m for m in models if id(m) not in keep)


def load_models(cfg: LineConfig) -> dict[str, tuple[Model, Judge]]:
    """Each stream's model and judge, by source name, every bundle loaded and checked once (files,
    hashes, calibration, backend; the signature with trust.keys). On any failure, what was loaded is
    closed and nothing is kept."""
    loaded: dict[Path, Model] = {}
    try:
        assigned = {}
        for stream in cfg.streams:
            path = stream.bundle
            if path is None:  # a config read for edge-capture, which needs none, or made in Python
                raise ConfigError(f"stream {stream.source.name}: no bundle; give it the directory export-engine made")
            if path not in loaded:
                bundle = load_bundle(path, trusted_keys=cfg.trust.keys)
                loaded[path] = Model(bundle, load_backend(bundle, cfg.backend, cfg.gpu, cfg.batch.max_batch))
            model = loaded[path]
            assigned[stream.source.name] = model, judge_for(model.bundle, stream.k)
        return assigned
    except BaseException:
        close_models(loaded.values())
        raise
