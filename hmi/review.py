"""The review of evidence: NG parts (``evidence.dir``, with ``evidence.raw: true``) and sampled OK
parts (``evidence.dir/ok``) that an operator marks "good part (false reject)" or "defect
confirmed". The judged image moves to ``<review_dir>/good/`` or ``<review_dir>/<defect type>/``
(so ``edge-calibrate --data <review_dir>/good`` takes it as it is) and one line goes into
``<review_dir>/log.jsonl``, append-only: who, when, what, the model and the score."""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

Kind = Literal["ng", "ok"]
Mark = Literal["good", "defect"]
DEFECT_TYPE = re.compile(r"[a-z0-9][a-z0-9_-]{0,39}")
LOG = "log.jsonl"


class ReviewError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Part:
    name: str  # the evidence's part name, as the daemon's EvidenceStore named it
    kind: Kind
    t: float  # when the daemon saved it (mtime)
    overlay: bool  # an overlay image to show (NG parts)
    reviewable: bool  # its judged image (raw) is there to move
    score: float | None
    threshold: float | None
    model: str | None


class Review:
    def __init__(self, evidence_dir: Path | None, review_dir: Path) -> None:
        self.evidence_dir, self.review_dir = evidence_dir, review_dir

    def folder(self, kind: Kind) -> Path:
        if self.evidence_dir is None:
            raise ReviewError("evidence.dir is not set: the daemon saves no evidence to review")
        return self.evidence_dir if kind == "ng" else self.evidence_dir / "ok"

    def parts(self, since: float = 0.0, until: float = float("inf")) -> list[Part]:
        """The parts saved in [since, until] not yet reviewed, newest first."""
        reviewed = {entry.get("name") for entry in self.log()}
        found = []
        for kind in ("ng", "ok"):
            folder = self.folder(kind)
            suffix = "_NG" if kind == "ng" else "_OK"
            names = {p.stem.removesuffix("_raw") for p in folder.glob(f"*{suffix}*.png")} if folder.is_dir() else set()
            for name in names - reviewed:
                part = self._part(folder, name, kind)
                if part is not None and since <= part.t <= until:
                    found.append(part)
        return sorted(found, key=lambda p: p.t, reverse=True)

    def _part(self, folder: Path, name: str, kind: Kind) -> Part | None:
        raw, overlay, meta_file = folder / f"{name}_raw.png", folder / f"{name}.png", folder / f"{name}.json"
        try:
            t = (raw if raw.exists() else overlay).stat().st_mtime
            meta = json.loads(meta_file.read_text()) if meta_file.exists() else {}
        except (OSError, ValueError):
            return None  # the daemon's ring removed it meanwhile, or it is being written
        return Part(
            name, kind, t, overlay.exists(), raw.exists(), meta.get("score"), meta.get("threshold"), meta.get("model")
        )

    def image(self, kind: Kind, name: str, raw: bool) -> Path:
        if not re.fullmatch(r"[A-Za-z0-9._-]+", name) or name.startswith("."):
            raise ReviewError(f"no part {name!r}")
        path = self.folder(kind) / f"{name}{'_raw' if raw else ''}.png"
        if not path.is_file():
            raise ReviewError(f"no part {name!r} (the daemon's evidence ring may have removed it)")
        return path

    def mark(self, kind: Kind, name: str, mark: Mark, user: str, defect_type: str | None = None) -> Path:
        """Moves the part's judged image into the review folder and logs it; returns where it went."""
        label = "good" if mark == "good" else (defect_type or "defect")
        if mark == "defect" and (not DEFECT_TYPE.fullmatch(label) or label == "good"):
            raise ReviewError(f"defect type {label!r}: lower-case letters, digits, '_' or '-' (not 'good')")
        raw = self.image(kind, name, raw=True)
        part = self._part(raw.parent, name, kind)
        target = self.review_dir / label / f"{name}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(raw, target)
        entry = {
            "t": time.time(),
            "user": user,
            "mark": mark,
            "label": label,
            "file": str(target.relative_to(self.review_dir)),
            **(
                {k: v for k, v in asdict(part).items() if k in ("name", "kind", "score", "threshold", "model")}
                if part
                else {}
            ),
        }
        with open(self.review_dir / LOG, "a") as log:
            log.write(json.dumps(entry) + "\n")
            log.flush()
            os.fsync(log.fileno())
        return target

    def log(self) -> list[dict]:
        path = self.review_dir / LOG
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
