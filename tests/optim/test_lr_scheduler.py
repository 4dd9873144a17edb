"""Learning-rate schedulers: the exact PyTorch sequences, state dicts, resuming, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest

import tinygrad_rnn as tg
from tinygrad_rnn import optim
from tinygrad_rnn.optim import lr_scheduler

LRS = (0.1, 0.05)  # two parameter groups with different learning rates
EPOCHS = 40


def _our_optimizer(name="SGD"):
    groups = [{"params": [tg.Tensor(np.ones(2), requires_grad=True)], "lr": lr} for lr in LRS]
    return getattr(optim, name)(groups, lr=1.0)


def _torch_optimizer(torch, name="SGD"):
    groups = [{"params": [torch.ones(2, requires_grad=True)], "lr": lr} for lr in LRS]
    return getattr(torch.optim, name)(groups, lr=1.0)


def _lambda(epoch):
    return 0.95**epoch


# name -> (builder taking (module, optimizer) and returning a scheduler)
SCHEDULERS = {
    "StepLR": lambda m, o: m.StepLR(o, step_size=7),
    "StepLR-gamma": lambda m, o: m.StepLR(o, step_size=3, gamma=0.5),
    "MultiStepLR": lambda m, o: m.MultiStepLR(o, milestones=[5, 12, 12, 30], gamma=0.3),
    "ExponentialLR": lambda m, o: m.ExponentialLR(o, gamma=0.9),
    "CosineAnnealingLR": lambda m, o: m.CosineAnnealingLR(o, T_max=10),
    "CosineAnnealingLR-eta_min": lambda m, o: m.CosineAnnealingLR(o, T_max=13, eta_min=0.01),
    "LambdaLR": lambda m, o: m.LambdaLR(o, lr_lambda=_lambda),
    "LambdaLR-list": lambda m, o: m.LambdaLR(o, lr_lambda=[_lambda, lambda e: 1 / (1 + e)]),
    "LinearLR": lambda m, o: m.LinearLR(o),
    "LinearLR-warmup": lambda m, o: m.LinearLR(o, start_factor=0.01, total_iters=15),
    "LinearLR-decay": lambda m, o: m.LinearLR(o, start_factor=1.0, end_factor=0.1,
                                              total_iters=25),
    "SequentialLR-warmup-cosine": lambda m, o: m.SequentialLR(
        o, [m.LinearLR(o, start_factor=0.1, total_iters=5), m.CosineAnnealingLR(o, T_max=30)],
        milestones=[5]),
    "SequentialLR-three": lambda m, o: m.SequentialLR(
        o, [m.ExponentialLR(o, gamma=0.8), m.StepLR(o, step_size=4),
            m.CosineAnnealingLR(o, T_max=8, eta_min=0.001)], milestones=[6, 20]),
}


@pytest.mark.parametrize("name", list(SCHEDULERS))
def test_sequence_matches_torch_exactly(torch, name):
    build = SCHEDULERS[name]
    ours_opt, theirs_opt = _our_optimizer(), _torch_optimizer(torch)
    ours, theirs = build(lr_scheduler, ours_opt), build(torch.optim.lr_scheduler, theirs_opt)
    for epoch in range(EPOCHS):
        assert ours.get_last_lr() == theirs.get_last_lr(), f"epoch {epoch}"
        assert [g["lr"] for g in ours_opt.param_groups] == [
            g["lr"] for g in theirs_opt.param_groups]
        ours_opt.step()
        theirs_opt.step()
        ours.step()
        theirs.step()


def test_linear_warmup_then_cosine_shape():
    opt = _our_optimizer()
    scheduler = lr_scheduler.SequentialLR(
        opt, [lr_scheduler.LinearLR(opt, start_factor=0.25, total_iters=4),
              lr_scheduler.CosineAnnealingLR(opt, T_max=8)], milestones=[4])
    lrs = []
    for _ in range(13):
        lrs.append(scheduler.get_last_lr()[0])
        opt.step()
        scheduler.step()
    expected_warmup = [0.1 * (0.25 + 0.75 * t / 4) for t in range(4)]
    expected_cosine = [0.1 * (1 + math.cos(math.pi * t / 8)) / 2 for t in range(9)]
    np.testing.assert_allclose(lrs, expected_warmup + expected_cosine, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("name", ["StepLR", "MultiStepLR", "ExponentialLR", "CosineAnnealingLR",
                                  "LinearLR-warmup"])
def test_step_with_epoch_uses_the_closed_form_like_torch(torch, name):
    build = SCHEDULERS[name]
    ours, theirs = build(lr_scheduler, _our_optimizer()), build(
        torch.optim.lr_scheduler, _torch_optimizer(torch))
    for epoch in [3, 9, 4, 21, 0, 15]:
        with pytest.warns(UserWarning):
            ours.step(epoch)
        with pytest.warns(UserWarning):
            theirs.step(epoch)
        assert ours.get_last_lr() == theirs.get_last_lr()


PLATEAU = {
    "min-rel": {},
    "min-abs-cooldown": {"threshold_mode": "abs", "threshold": 0.05, "cooldown": 2, "patience": 1},
    "max-rel": {"mode": "max", "factor": 0.5, "patience": 2},
    "max-abs-min_lr": {"mode": "max", "threshold_mode": "abs", "patience": 0, "factor": 0.2,
                       "min_lr": [0.004, 0.001]},
    "min-eps": {"patience": 0, "factor": 0.5, "min_lr": 0.01, "eps": 0.02},
}


@pytest.mark.parametrize("name", list(PLATEAU))
def test_reduce_on_plateau_matches_torch(torch, name):
    kwargs = PLATEAU[name]
    ours_opt, theirs_opt = _our_optimizer(), _torch_optimizer(torch)
    ours = lr_scheduler.ReduceLROnPlateau(ours_opt, **kwargs)
    theirs = torch.optim.lr_scheduler.ReduceLROnPlateau(theirs_opt, **kwargs)
    rng = np.random.default_rng(3)
    metrics = np.concatenate([np.linspace(1.0, 0.5, 10), 0.5 + 0.02 * rng.standard_normal(40)])
    if kwargs.get("mode") == "max":
        metrics = -metrics
    for epoch, metric in enumerate(metrics):
        metric = float(metric)
        ours.step(tg.Tensor(np.array(metric)) if epoch % 2 else metric)
        theirs.step(metric)
        assert ours.get_last_lr() == theirs.get_last_lr(), f"epoch {epoch}"
        assert ours.num_bad_epochs == theirs.num_bad_epochs
        assert ours.best == theirs.best
    assert ours.get_last_lr() != list(LRS)  # the test did exercise a reduction


@pytest.mark.parametrize("name", list(SCHEDULERS) + ["ReduceLROnPlateau"])
def test_state_dict_resume_through_a_checkpoint(tmp_path, name):
    """Save the optimizer and scheduler half-way (tg.save), restore into fresh ones, go on."""
    def build(opt):
        if name == "ReduceLROnPlateau":
            return lr_scheduler.ReduceLROnPlateau(opt, patience=1, cooldown=1, factor=0.5)
        return SCHEDULERS[name](lr_scheduler, opt)

    def advance(opt, scheduler, epochs, start):
        lrs = []
        for epoch in range(start, start + epochs):
            opt.step()
            if name == "ReduceLROnPlateau":
                scheduler.step(1.0 / (1 + epoch) if epoch < 8 else 0.2)
            else:
                scheduler.step()
            lrs.append(scheduler.get_last_lr())
        return lrs

    opt = _our_optimizer()
    scheduler = build(opt)
    straight = advance(opt, scheduler, 30, 0)

    opt = _our_optimizer()
    scheduler = build(opt)
    first = advance(opt, scheduler, 12, 0)
    tg.save({"optimizer": opt.state_dict(), "scheduler": scheduler.state_dict()},
            tmp_path / "sched.npz")
    checkpoint = tg.load(tmp_path / "sched.npz")

    opt = _our_optimizer()
    scheduler = build(opt)  # created first: it sets the lrs, which load_state_dict overwrites
    opt.load_state_dict(checkpoint["optimizer"])
    scheduler.load_state_dict(checkpoint["scheduler"])
    assert first + advance(opt, scheduler, 18, 12) == straight


def test_lambda_lr_state_dict_does_not_save_functions():
    class Warmup:
        def __init__(self):
            self.steps = 3

        def __call__(self, epoch):
            return min(1.0, (epoch + 1) / self.steps)

    opt = _our_optimizer()
    scheduler = lr_scheduler.LambdaLR(opt, [_lambda, Warmup()])
    state = scheduler.state_dict()
    assert state["lr_lambdas"] == [None, {"steps": 3}]
    state["lr_lambdas"][1]["steps"] = 10
    fresh = lr_scheduler.LambdaLR(_our_optimizer(), [_lambda, Warmup()])
    fresh.load_state_dict(state)
    assert fresh.lr_lambdas[1].steps == 10 and fresh.lr_lambdas[0] is _lambda


def test_get_last_lr_is_a_copy():
    scheduler = lr_scheduler.StepLR(_our_optimizer(), step_size=2)
    scheduler.get_last_lr()[0] = 123.0
    assert scheduler.get_last_lr() == list(LRS)


def test_resuming_with_last_epoch_needs_initial_lr():
    with pytest.raises(KeyError, match="initial_lr"):
        lr_scheduler.StepLR(_our_optimizer(), step_size=2, last_epoch=4)


@pytest.mark.parametrize("build, match", [
    (lambda o: lr_scheduler.StepLR(o, step_size=0), "step_size"),
    (lambda o: lr_scheduler.CosineAnnealingLR(o, T_max=0), "T_max"),
    (lambda o: lr_scheduler.LinearLR(o, start_factor=0.0), "start_factor"),
    (lambda o: lr_scheduler.LinearLR(o, end_factor=1.5), "end_factor"),
    (lambda o: lr_scheduler.ReduceLROnPlateau(o, factor=1.0), "factor"),
    (lambda o: lr_scheduler.ReduceLROnPlateau(o, mode="lowest"), "mode"),
    (lambda o: lr_scheduler.ReduceLROnPlateau(o, threshold_mode="pct"), "threshold_mode"),
    (lambda o: lr_scheduler.ReduceLROnPlateau(o, min_lr=[0.1]), "min_lr"),
    (lambda o: lr_scheduler.LambdaLR(o, [_lambda]), "lr_lambda"),
    (lambda o: lr_scheduler.SequentialLR(o, [lr_scheduler.StepLR(o, 2)], milestones=[3]),
     "milestones"),
    (lambda o: lr_scheduler.SequentialLR(o, [lr_scheduler.StepLR(_our_optimizer(), 2)], []),
     "different optimizer"),
])
def test_invalid_arguments_raise(build, match):
    with pytest.raises(ValueError, match=match):
        build(_our_optimizer())


def test_scheduler_needs_an_optimizer():
    with pytest.raises(TypeError, match="Optimizer"):
        lr_scheduler.StepLR([tg.Tensor(np.ones(1))], step_size=2)
