"""The shared training loop: losses go down, checkpoints and --resume reproduce an uninterrupted run."""

from __future__ import annotations

import re

import pytest
import torch

from export.data import DataError
from export.simplenet import SimpleNetConfig
from export.training import BEST, LAST, Trainer, run_identity, seed_everything

X = torch.linspace(-1, 1, 64).unsqueeze(1)
Y = 3 * X + 0.5


def setup(seed: int = 0):
    seed_everything(seed)
    model = torch.nn.Linear(1, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)

    def steps(epoch, fail_at=None):
        for i in torch.randperm(64).split(16):  # uses the global RNG: resume must restore it
            if fail_at == epoch:
                raise KeyboardInterrupt
            loss = torch.nn.functional.mse_loss(model(X[i]), Y[i])
            opt.zero_grad()
            loss.backward()
            opt.step()
            yield {"mse": loss.item()}

    return model, opt, steps


def test_loss_goes_down_and_checkpoints_are_written(tmp_path):
    model, opt, steps = setup()
    result = Trainer({"m": model}, {"o": opt}, tmp_path, every=2).fit(6, steps, 4)
    assert result.epochs_run == 6 and result.history[-1]["mse"] < result.history[0]["mse"] / 10
    assert (tmp_path / LAST).is_file()


def test_ctrl_c_then_resume_equals_an_uninterrupted_run(tmp_path):
    model, opt, steps = setup()
    Trainer({"m": model}, {"o": opt}, None).fit(6, steps, 4)
    reference = model.weight.item(), model.bias.item()

    model, opt, steps = setup()
    with pytest.raises(KeyboardInterrupt):
        Trainer({"m": model}, {"o": opt}, tmp_path, every=100).fit(6, lambda e: steps(e, fail_at=4), 4)
    assert torch.load(tmp_path / LAST, weights_only=True)["result"]["epochs_run"] == 3

    model, opt, steps = setup(seed=123)  # a fresh process would not share the RNG either
    trainer = Trainer({"m": model}, {"o": opt}, tmp_path)
    assert trainer.resume()
    trainer.fit(6, steps, 4)
    assert (model.weight.item(), model.bias.item()) == pytest.approx(reference, abs=0, rel=0)


def test_model_selection_keeps_the_best_epoch_and_stops_early(tmp_path):
    model, opt, steps = setup()
    scores = iter([1.0, 3.0, 2.0, 2.5, 2.4, 0.0, 0.0])
    snapshots = []

    def validate():
        snapshots.append(model.weight.item())
        return next(scores)

    result = Trainer({"m": model}, {"o": opt}, tmp_path, validate=validate, patience=3).fit(10, steps, 4)
    assert (result.best_epoch, result.epochs_run) == (2, 5)
    assert model.weight.item() == snapshots[1] and (tmp_path / BEST).is_file()


def test_diverging_loss_is_a_clear_error():
    model, opt, _ = setup()

    def steps(_epoch):
        yield {"loss": float("nan")}

    with pytest.raises(FloatingPointError, match="loss became"):
        Trainer({"m": model}, {"o": opt}, None).fit(2, steps, 1)


def test_an_early_stopped_run_resumed_trains_no_further(tmp_path):
    model, opt, steps = setup()
    scores = iter([1.0, 0.5])
    result = Trainer({"m": model}, {"o": opt}, tmp_path, validate=lambda: next(scores), patience=1).fit(10, steps, 4)
    assert (result.epochs_run, result.best_epoch, result.stopped_early) == (2, 1, True)
    kept = model.weight.item()

    model, opt, steps = setup(seed=1)
    validations = []
    trainer = Trainer({"m": model}, {"o": opt}, tmp_path, validate=lambda: validations.append(1) or 2.0, patience=1)
    assert trainer.resume()
    again = trainer.fit(10, steps, 4)
    assert again.epochs_run == 2 and again.history == result.history and not validations
    assert model.weight.item() == kept


def test_resume_refuses_the_checkpoint_of_another_run(tmp_path):
    model, opt, steps = setup()
    written = {"method": "simplenet", "hidden_dim": 1024, "lr": 0.1}
    Trainer({"m": model}, {"o": opt}, tmp_path, identity=written).fit(1, steps, 4)
    for identity, needle in (
        ({"method": "glass", "mode": "manifold"}, "holds a simplenet run, not a glass one"),
        ({**written, "hidden_dim": 512}, "hidden_dim 512 (the checkpoint's: 1024)"),
    ):
        with pytest.raises(DataError, match=re.escape(needle)) as error:
            Trainer({"m": model}, {"o": opt}, tmp_path, identity=identity).resume()
        assert str(tmp_path) in str(error.value) and "--checkpoint-dir" in str(error.value)
    assert Trainer({"m": model}, {"o": opt}, tmp_path, identity=dict(written)).resume()


def test_a_run_is_identified_by_what_it_trains_not_how_or_how_long():
    base = run_identity("simplenet", SimpleNetConfig())
    assert base == run_identity(
        "simplenet", SimpleNetConfig(epochs=3, resume=True, checkpoint_dir="c", checkpoint_every=1, reference=True)
    )
    assert base["method"] == "simplenet" and base["hidden_dim"] == 1024 and "resume" not in base
    assert base != run_identity("simplenet", SimpleNetConfig(hidden_dim=512))
    assert base != run_identity("glass", SimpleNetConfig())


def test_resume_refuses_another_network_in_a_checkpoint_without_identity(tmp_path):
    model, opt, steps = setup()
    Trainer({"m": model}, {"o": opt}, tmp_path).fit(1, steps, 4)  # as written before checkpoints had one
    wider = torch.nn.Linear(2, 1)
    with pytest.raises(DataError, match="holds another network than this run's") as error:
        Trainer(
            {"m": wider}, {"o": torch.optim.SGD(wider.parameters(), lr=0.1)}, tmp_path, identity={"method": "simplenet"}
        ).resume()
    assert str(tmp_path) in str(error.value)


class _Trap:
    """Unpickled without restriction, it would create a file: the proof that a load ran its code."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


def test_a_checkpoint_of_pickled_objects_is_refused_without_being_unpickled(tmp_path):
    from export.training import TrainResult

    marker = tmp_path / "code ran"
    model, opt, _ = setup()
    old = {  # what 0.1.0 wrote: its TrainResult as an object, plus one that acts when unpickled
        "identity": None,
        "modules": {"m": model.state_dict()},
        "optimizers": {"o": opt.state_dict()},
        "result": TrainResult(3, None, None),
        "trap": _Trap(marker),
    }
    torch.save(old, tmp_path / LAST)
    with pytest.raises(DataError, match="is not plain data") as error:
        Trainer({"m": model}, {"o": opt}, tmp_path).resume()
    assert not marker.exists()
    assert str(tmp_path / LAST) in str(error.value) and "\n" not in str(error.value)


def test_a_plain_data_checkpoint_without_its_format_is_refused(tmp_path):
    model, opt, _ = setup()
    torch.save({"modules": {"m": model.state_dict()}}, tmp_path / LAST)
    with pytest.raises(DataError, match=r"format None, this export-engine reads 2"):
        Trainer({"m": model}, {"o": opt}, tmp_path).resume()
