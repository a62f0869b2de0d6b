import math

import pytest
import torch
from diffusers.training_utils import EMAModel

from gammaface.diffusion.ema import Ema


class _Scalar(torch.nn.Module):
    def __init__(self, value: float) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor([value], dtype=torch.float64))
        self.register_buffer("seen", torch.tensor([0]))


def test_ema_of_a_held_weight_closes_the_gap_by_the_product_of_the_decays():
    model = _Scalar(1.0)
    ema = Ema(model, decay=0.9)
    model.w.data.fill_(3.0)  # from here on the weight stays put
    model.seen.fill_(7)
    for step in range(40):
        ema.update(model, step)
    decays = [min(0.9, (1 + s) / (10 + s)) for s in range(40)]
    # s_t = d s_{t-1} + (1 - d) w: the gap to w shrinks by d each step
    expected = 3.0 - 2.0 * math.prod(decays)
    assert float(ema.state_dict()["w"]) == float(torch.tensor(expected, dtype=torch.float32))
    assert int(ema.state_dict()["seen"]) == 7  # a non-float buffer is copied, not averaged


def test_ema_agrees_with_diffusers_ema_model_to_float_rounding():
    """diffusers' EMAModel uses the same warm-up, min(decay, (1 + t) / (10 + t)), but starts
    one step later (its first step copies the weights) and updates as s - (1 - d)(s - w);
    after the warm-up the two agree to float32 rounding."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
    ours = Ema(model, decay=0.99)
    theirs = EMAModel(model.parameters(), decay=0.99)
    for step in range(200):
        for p in model.parameters():
            p.data.add_(torch.randn_like(p) * 0.01)
        ours.update(model, step)
        theirs.step(model.parameters())
    shadow = ours.state_dict()
    for (name, _), reference in zip(model.named_parameters(), theirs.shadow_params):
        torch.testing.assert_close(shadow[name], reference, rtol=1e-5, atol=1e-6)


def test_copy_to_and_load_state_dict_round_trip():
    torch.manual_seed(1)
    model = torch.nn.Linear(4, 3)
    ema = Ema(model, decay=0.5)
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update(model, 100)
    target = torch.nn.Linear(4, 3)
    ema.copy_to(target)
    torch.testing.assert_close(target.state_dict()["weight"], ema.state_dict()["weight"])
    other = Ema(target, decay=0.5)
    other.load_state_dict(ema.state_dict())
    assert all(torch.equal(other.state_dict()[k], v) for k, v in ema.state_dict().items())


def test_cosine_learning_rate_is_torchs_cosine_annealing_after_the_warmup():
    from gammaface.diffusion.train_loop import lr_factor

    warmup, steps = 10, 110
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    reference = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps - warmup, eta_min=0.0)
    for step in range(warmup, steps + 1):
        assert lr_factor(step, warmup, steps, "cosine") == pytest.approx(opt.param_groups[0]["lr"],
                                                                          abs=1e-12)
        opt.step()
        reference.step()
    assert [lr_factor(s, warmup, steps, "cosine") for s in range(warmup)] == \
        [lr_factor(s, warmup, steps, "constant") for s in range(warmup)] == \
        [(s + 1) / warmup for s in range(warmup)]
    assert lr_factor(steps, warmup, steps, "cosine") == 0.0
    assert {lr_factor(s, warmup, steps, "constant") for s in range(warmup, steps)} == {1.0}
