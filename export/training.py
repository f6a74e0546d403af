"""The training loop every trained method shares: what a person running a long training expects.

A progress bar per epoch with the running losses, one log line per epoch, a checkpoint every
N epochs and on Ctrl-C, ``--resume`` that continues bit-for-bit where it stopped (RNG states
included), seeding, and model selection / early stopping on a validation score that the method
computes from training data or held-out good parts, never from the test set.
"""

from __future__ import annotations

import copy
import logging
import math
import pickle
import random
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from .data import DataError
from .options import OptionGroup
from .sizes import DEFAULT_PIXEL_BUDGET

log = logging.getLogger(__name__)

LAST, BEST = "last.pt", "best.pt"
# Checkpoints are plain data (state dicts, tensors, numbers, strings, lists, dicts), read with
# torch.load(weights_only=True): loading one never runs code from the file. 0.1.0 pickled
# TrainResult and numpy's RNG state, which only an unrestricted unpickler reads; such a file is
# refused, never unpickled.
CHECKPOINT_FORMAT = 2


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


RUN_ONLY = (
    "checkpoint_dir",
    "checkpoint_every",
    "resume",
    "reference",
)  # how to run, not what the model is: kept out of bundles


def run_identity(method: str, config: Any, after_training: Iterable[str] = ()) -> dict[str, Any]:
    """What a checkpoint records of the run that wrote it, so that ``--resume`` continues only
    that run: the method and its config, less what a resumption may change: RUN_ONLY, the
    ``epochs`` (a finished run may go on for more) and the fields the method reads only after
    training, ``after_training`` (the trained weights do not depend on them)."""
    skip = {*RUN_ONLY, "epochs", *after_training}
    return {"method": method, **{k: v for k, v in asdict(config).items() if k not in skip}}


@dataclass(slots=True)
class RunOptions:
    """How a training run goes, not what it trains: the options the from-scratch methods'
    configs share, inherited so that their names and meanings cannot drift apart (the CLI
    offers each under one flag for every method). A method redeclares one to change its
    default. As base-class fields they come first in ``dataclasses.fields``, and so in
    bundle.yaml's method_params."""

    checkpoint_every: int = 10  # epochs between checkpoints (also written on Ctrl-C)
    patience: int | None = None  # validations without improvement before stopping early; None: all epochs
    checkpoint_dir: str | None = None  # None: <out>.checkpoints beside the bundle
    resume: bool = False  # continue from checkpoint_dir's last checkpoint
    holdout: float = 0.1  # good images kept out of training: validation, then calibration
    seed: int = 0
    reference: bool = False  # also score DATA's labelled test set in PyTorch (reference.npz)
    pixel_budget: int = DEFAULT_PIXEL_BUDGET  # size auto: pixels of the working resolution


@dataclass
class TrainResult:
    epochs_run: int
    best_epoch: int | None
    best_score: float | None
    history: list[dict[str, float]] = field(default_factory=list)
    interrupted: bool = False
    stopped_early: bool = False  # patience ran out: the run is finished, --resume trains no further


def _numpy_rng_state() -> dict[str, Any]:
    """numpy's global RNG state as plain data (its key array as a list of ints)."""
    state = np.random.get_state(legacy=False)
    return {**state, "state": {**state["state"], "key": state["state"]["key"].tolist()}}


def read_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint's plain data; DataError for one in another format (never unpickled)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise DataError(
            f"checkpoint {path} is not plain data (edge-inspect 0.1.0 pickled objects into its checkpoints), "
            f"so it is not read: start the run again in another --checkpoint-dir"
        ) from exc
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise DataError(
            f"checkpoint {path} has format {found!r}, this export-engine reads {CHECKPOINT_FORMAT}: start the "
            f"run again in another --checkpoint-dir"
        )
    return state


class Trainer:
    """Runs ``steps(epoch)``, an iterable of per-step loss dicts, for each epoch.

    modules / optimizers: everything whose state must survive a checkpoint, by name.
    validate: optional, higher is better; the best epoch's weights are kept and restored at the end.
    patience: stop after this many validations without improvement (None: run all epochs).
    identity: the run's ``run_identity``, written into checkpoints; ``resume`` refuses one that
    records another.
    """

    def __init__(
        self,
        modules: dict[str, torch.nn.Module],
        optimizers: dict[str, torch.optim.Optimizer],
        checkpoint_dir: Path | None,
        *,
        every: int = 10,
        validate: Callable[[], float] | None = None,
        validate_every: int = 1,
        patience: int | None = None,
        desc: str = "train",
        identity: dict[str, Any] | None = None,
    ):
        self.modules, self.optimizers = modules, optimizers
        self.dir = Path(checkpoint_dir) if checkpoint_dir else None
        self.every, self.validate, self.validate_every, self.patience = every, validate, validate_every, patience
        self.desc, self.identity = desc, identity
        self.result = TrainResult(0, None, None)
        self._snapshot: dict | None = None  # the state at the end of the last whole epoch

    # -- checkpoints -------------------------------------------------------------------
    def _state(self) -> dict:
        return {
            "identity": self.identity,
            "modules": {k: m.state_dict() for k, m in self.modules.items()},
            "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
            "format": CHECKPOINT_FORMAT,
            "result": asdict(self.result),
            "rng": {"torch": torch.get_rng_state(), "numpy": _numpy_rng_state(), "python": random.getstate()},
        }

    def save(self, name: str = LAST) -> Path | None:
        """Write the end-of-epoch state: a Ctrl-C mid-epoch must not save half-updated weights or an
        advanced RNG, or --resume would not repeat the run."""
        if self.dir is None or self._snapshot is None:
            return None
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.dir / f".{name}.tmp"
        torch.save(self._snapshot, tmp)
        tmp.replace(self.dir / name)  # a crash mid-write never leaves a half checkpoint
        return self.dir / name

    def _load(self, path: Path, with_rng: bool) -> None:
        state = read_checkpoint(path)
        if with_rng:
            self._check_identity(state.get("identity"))
        try:
            for k, m in self.modules.items():
                m.load_state_dict(state["modules"][k])
        except RuntimeError as exc:  # keys or shapes that differ, in a checkpoint that records no identity
            if "loading state_dict" not in str(exc):
                raise
            raise DataError(
                f"checkpoint folder {self.dir} holds another network than this run's: resume with "
                f"the options of the run that wrote it, or start this one in another --checkpoint-dir"
            ) from exc
        if with_rng:
            for k, o in self.optimizers.items():
                o.load_state_dict(state["optimizers"][k])
            self.result = TrainResult(**state["result"])
            torch.set_rng_state(state["rng"]["torch"])
            numpy_rng = state["rng"]["numpy"]
            key = np.array(numpy_rng["state"]["key"], np.uint32)
            np.random.set_state({**numpy_rng, "state": {**numpy_rng["state"], "key": key}})
            random.setstate(state["rng"]["python"])

    def _check_identity(self, written: dict[str, Any] | None) -> None:
        if self.identity is None or written is None or written == self.identity:
            return
        theirs, ours = written["method"], self.identity["method"]
        if theirs != ours:
            raise DataError(
                f"checkpoint folder {self.dir} holds a {theirs} run, not a {ours} one: resume it with "
                f"--method {theirs}, or start this one in another --checkpoint-dir"
            )
        keys = sorted(written.keys() | self.identity.keys())
        differs = ", ".join(
            f"{k} {self.identity.get(k)!r} (the checkpoint's: {written.get(k)!r})"
            for k in keys
            if written.get(k) != self.identity.get(k)
        )
        raise DataError(
            f"checkpoint folder {self.dir} holds a run with other options: {differs}; resume with that "
            f"run's options, or start this one in another --checkpoint-dir"
        )

    def resume(self) -> bool:
        """Continue from the last checkpoint if there is one; False when starting fresh."""
        if self.dir is None or not (self.dir / LAST).is_file():
            return False
        self._load(self.dir / LAST, with_rng=True)
        self._snapshot = copy.deepcopy(self._state())
        log.info("resuming %s after epoch %d from %s", self.desc, self.result.epochs_run, self.dir / LAST)
        return True

    # -- the loop ----------------------------------------------------------------------
    def _epoch(
        self, epoch: int, epochs: int, steps: Iterable[dict[str, float]], steps_per_epoch: int
    ) -> dict[str, float]:
        """One epoch's training steps under a progress bar; the mean of each loss."""
        for m in self.modules.values():
            m.train()
        sums: dict[str, float] = {}
        bar = tqdm(steps, total=steps_per_epoch, desc=f"{self.desc} {epoch}/{epochs}", unit="step", leave=False)
        n = 0
        for n, losses in enumerate(bar, 1):
            for k, v in losses.items():
                sums[k] = sums.get(k, 0.0) + float(v)
            bar.set_postfix({k: f"{s / n:.4f}" for k, s in sums.items()})
        means = {k: s / max(n, 1) for k, s in sums.items()}
        if any(not math.isfinite(v) for v in means.values()):
            raise FloatingPointError(
                f"{self.desc}: loss became {means} in epoch {epoch}; lower the learning rate or check the data"
            )
        return means

    def fit(self, epochs: int, steps: Callable[[int], Iterable[dict[str, float]]], steps_per_epoch: int) -> TrainResult:
        r = self.result
        last_epoch = r.epochs_run if r.stopped_early else epochs
        try:
            for epoch in range(r.epochs_run + 1, last_epoch + 1):
                means = self._epoch(epoch, epochs, steps(epoch), steps_per_epoch)
                r.epochs_run = epoch
                line = f"{self.desc} epoch {epoch}/{epochs}: " + ", ".join(f"{k} {v:.4f}" for k, v in means.items())
                if self.validate is not None and (epoch % self.validate_every == 0 or epoch == epochs):
                    for m in self.modules.values():
                        m.eval()
                    with torch.no_grad():
                        means["val"] = score = float(self.validate())
                    line += f", val {score:.4f}"
                    if r.best_score is None or score > r.best_score:
                        r.best_epoch, r.best_score = epoch, score
                        line += " (best)"
                r.history.append({"epoch": epoch, **means})
                since_best = 0 if r.best_epoch is None else epoch - r.best_epoch
                r.stopped_early = self.patience is not None and since_best >= self.patience * self.validate_every
                self._snapshot = copy.deepcopy(self._state())
                if r.best_epoch == epoch:
                    self.save(BEST)
                log.info(line)
                if epoch % self.every == 0:
                    self.save(LAST)
                if r.stopped_early:
                    log.info(
                        "%s: no better validation for %d epochs, stopping early at epoch %d (best: epoch %d)",
                        self.desc,
                        since_best,
                        epoch,
                        r.best_epoch,
                    )
                    break
        except KeyboardInterrupt:
            r.interrupted = True
            path = self.save(LAST)
            log.warning(
                "%s interrupted after epoch %d; checkpoint %s (continue with --resume)", self.desc, r.epochs_run, path
            )
            raise
        self.save(LAST)
        if r.best_epoch is not None and r.best_epoch != r.epochs_run and self.dir is not None:
            self._load(self.dir / BEST, with_rng=False)
            log.info("%s: keeping the weights of epoch %d (validation %.4f)", self.desc, r.best_epoch, r.best_score)
        for m in self.modules.values():
            m.eval()
        return r


# What every method that trains a network reads (RunOptions' fields, epochs, lr).
TRAINING_OPTIONS = OptionGroup(
    "training",
    (
        (("--epochs",), {"type": int, "metavar": "N", "help": "training epochs (default: the method's config)"}),
        (("--lr",), {"type": float, "metavar": "LR", "help": "base learning rate (default: the method's config)"}),
        (
            ("--checkpoint-dir",),
            {"metavar": "DIR", "help": "where checkpoints go (default: BUNDLE_DIR.checkpoints beside the bundle)"},
        ),
        (
            ("--checkpoint-every",),
            {"type": int, "metavar": "N", "help": "write a checkpoint every N epochs (and on Ctrl-C)"},
        ),
        (
            ("--resume",),
            {
                "action": "store_true",
                "default": None,
                "help": "continue the run whose checkpoints are in --checkpoint-dir (a finished run only rebuilds the scoring graph)",
            },
        ),
        (
            ("--patience",),
            {
                "type": int,
                "metavar": "N",
                "help": "stop after N validations without improvement (validation never uses the test set; default: run all epochs, keep the best)",
            },
        ),
    ),
)
