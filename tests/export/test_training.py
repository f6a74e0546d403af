"""The shared training loop: losses go down, checkpoints and --resume reproduce an uninterrupted run."""
from __future__ import annotations

import pytest
import torch

from export.training import BEST, LAST, Trainer, seed_everything

X = torch.linspace(-1, 1, 64).unsqueeze(1)
Y = 3 * X + 0.5


def setup(seed: int = 0):
    seed_everything(seed)
    model = torch.nn.Linear(1, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)

    def steps(epoch, fail_at=None):
        for i in torch.randperm(64).split(16):     # uses the global RNG: resume must restore it
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
    assert torch.load(tmp_path / LAST, weights_only=False)["result"].epochs_run == 3

    model, opt, steps = setup(seed=123)           # a fresh process would not share the RNG either
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
