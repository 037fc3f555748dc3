"""Learning-rate schedules, gradient clipping and the dense layers' precision."""

from __future__ import annotations

import math

import pytest
import torch

from recplane.api.trainjob import Optimization
from recplane.trainer.optim import Schedule, build_optimizer, clip_dense_gradients, lr_factor
from recplane.trainer.precision import training_autocast


def test_linear_warmup_ramps_to_the_base_rate_then_holds() -> None:
    f = lr_factor(Optimization(lr_schedule="linear_warmup", warmup_steps=4), total_steps=100)
    assert [f(s) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]


def test_cosine_decays_to_zero_at_the_last_step_after_warmup() -> None:
    f = lr_factor(Optimization(lr_schedule="cosine", warmup_steps=10), total_steps=110)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(10) == pytest.approx(1.0) and f(60) == pytest.approx(0.5) and f(110) == pytest.approx(0.0)
    assert all(f(s) >= f(s + 1) for s in range(10, 110))


def test_the_schedule_scales_every_group_from_its_own_base_rate() -> None:
    a, b = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([{"params": [a], "lr": 0.1}, {"params": [b], "lr": 0.01}])
    schedule = Schedule(opt, lr_factor(Optimization(lr_schedule="cosine"), total_steps=10))
    schedule.apply(5)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.05, 0.005])
    schedule.apply(0)  # stateless: going back (a resume) gives the rate of that step again
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.1, 0.01])


def test_gradients_are_clipped_to_the_global_norm() -> None:
    p, q = torch.nn.Parameter(torch.zeros(3)), torch.nn.Parameter(torch.zeros(4))
    p.grad, q.grad = torch.full((3,), 3.0), torch.full((4,), 4.0)
    before = clip_dense_gradients([p, q], max_norm=1.0)
    assert before == pytest.approx(math.sqrt(27 + 64))
    total = torch.sqrt(p.grad.pow(2).sum() + q.grad.pow(2).sum())
    assert float(total) == pytest.approx(1.0, rel=1e-5)
    assert clip_dense_gradients([p, q], max_norm=None) is None


def test_the_dense_adam_is_fused_and_updates_as_the_reference_adam_does() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.ReLU(), torch.nn.Linear(5, 1))
    reference = [p.detach().clone().requires_grad_() for p in model.parameters()]
    ours = build_optimizer(model, Optimization(learning_rate=0.01))
    theirs = torch.optim.Adam(reference, lr=0.01)
    assert all(g["fused"] for g in dict(ours.optimizers)["dense"].param_groups)
    for _ in range(3):
        grads = [torch.randn_like(p) for p in reference]
        for p, q, g in zip(model.parameters(), reference, grads, strict=True):
            p.grad, q.grad = g.clone(), g.clone()
        ours.step()
        theirs.step()
    for p, q in zip(model.parameters(), reference, strict=True):
        torch.testing.assert_close(p.detach(), q.detach())


@pytest.mark.parametrize(("precision", "dtype"), [("fp32", torch.float32), ("bf16", torch.bfloat16)])
def test_dense_precision_sets_the_dtype_of_the_dense_layers_products(precision: str, dtype: torch.dtype) -> None:
    layer = torch.nn.Linear(8, 4)
    with training_autocast(precision, torch.device("cpu")):
        out = layer(torch.randn(2, 8))
    assert out.dtype == dtype
    assert layer.weight.dtype == torch.float32
