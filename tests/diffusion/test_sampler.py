import numpy as np
import pytest
import torch
from diffusers import DDIMPipeline, DDIMScheduler, DDPMScheduler, UNet2DModel

from gammaface.diffusion.presets import unet_config
from gammaface.diffusion.sampler import (effective_t, evaluations, forward_noise, grid,
                                         make_scheduler, renoise, reverse, reverse_with_exits,
                                         row_generators)

T = 1000


@pytest.fixture(scope="module")
def unet():
    torch.manual_seed(0)
    return UNet2DModel(**unet_config("tiny")).eval()


@pytest.fixture()
def train_scheduler():
    return DDPMScheduler(num_train_timesteps=T, beta_schedule="linear")


def _noise(n, seed=0):
    return torch.stack([torch.randn(3, 8, 8, generator=g) for g in row_generators(range(seed, seed + n))])


@pytest.mark.parametrize("t_star", [200, 480, 800, 333])
def test_stopping_and_restarting_at_t_star_equals_one_run(unet, train_scheduler, t_star):
    sched = make_scheduler(train_scheduler, "ddim")
    x_T = _noise(4)
    full = reverse(unet, sched, x_T, T, 0, steps=20)
    x_t = reverse(unet, sched, x_T, T, t_star, steps=20)
    resumed = reverse(unet, sched, x_t, t_star, 0, steps=20)
    torch.testing.assert_close(resumed, full, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(x_t, full)


def test_stochastic_ddim_split_with_per_row_generators(unet, train_scheduler):
    sched = make_scheduler(train_scheduler, "ddim")
    x_T = _noise(3)
    full = reverse(unet, sched, x_T, T, 0, steps=10, generator=row_generators([7, 8, 9]), eta=1.0)
    gens = row_generators([7, 8, 9])
    x_t = reverse(unet, sched, x_T, T, 500, steps=10, generator=gens, eta=1.0)
    split = reverse(unet, sched, x_t, 500, 0, steps=10, generator=gens, eta=1.0)
    torch.testing.assert_close(split, full, rtol=1e-5, atol=1e-5)


def test_t_star_snaps_to_the_grid(train_scheduler):
    sched = make_scheduler(train_scheduler, "ddim")
    timesteps = grid(sched, 20)
    assert timesteps[0] == 950 and timesteps[-1] == 0 and len(timesteps) == 20
    assert effective_t(sched, 20, 333) == 350
    assert effective_t(sched, 20, 200) == 200
    assert effective_t(sched, 20, 325) == 350  # a tie goes to the noisier timestep


@pytest.mark.parametrize(("t_from", "t_to", "steps"), [(T, 0, 20), (400, 0, 50), (333, 0, 20),
                                                       (T, 480, 10), (250, 0, 4)])
def test_a_renders_unet_evaluations_are_the_calls_reverse_makes(unet, train_scheduler, t_from,
                                                                t_to, steps):
    sched = make_scheduler(train_scheduler, "ddim")
    calls = []
    hook = unet.register_forward_hook(lambda module, args, out: calls.append(1))
    try:
        reverse(unet, sched, _noise(2), t_from, t_to, steps=steps)
    finally:
        hook.remove()
    assert evaluations(sched, steps, t_from, t_to) == len(calls)
    if t_to == 0:  # the leading grid's points at or below the start level (snapped)
        spacing = T // steps
        start = max(grid(sched, steps)) if t_from >= T else effective_t(sched, steps, t_from)
        assert len(calls) == start // spacing + 1


def test_full_sample_matches_diffusers_ddim_pipeline(unet, train_scheduler):
    ddim = DDIMScheduler.from_config(train_scheduler.config)
    pipe = DDIMPipeline(unet=unet, scheduler=ddim)
    theirs = pipe(batch_size=2, generator=torch.Generator().manual_seed(3), eta=0.0,
                  num_inference_steps=15, output_type="np").images
    x_T = torch.randn((2, 3, 8, 8), generator=torch.Generator().manual_seed(3))
    ours = reverse(unet, make_scheduler(train_scheduler, "ddim"), x_T, T, 0, steps=15)
    ours = ((ours / 2 + 0.5).clamp(0, 1)).permute(0, 2, 3, 1).numpy()
    np.testing.assert_allclose(ours, theirs, atol=1e-5)


def test_same_seed_same_images_whatever_the_batch(unet, train_scheduler):
    sched = make_scheduler(train_scheduler, "ddpm")
    x = _noise(4)
    a = reverse(unet, sched, x, T, 0, steps=10, generator=row_generators([1, 2, 3, 4]))
    b = reverse(unet, sched, x, T, 0, steps=10, generator=row_generators([1, 2, 3, 4]))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    part = reverse(unet, sched, x[2:], T, 0, steps=10, generator=row_generators([3, 4]))
    torch.testing.assert_close(part, a[2:], rtol=1e-5, atol=1e-5)


def test_forward_noise_has_the_closed_form_moments(train_scheduler):
    t = 300
    abar = float(train_scheduler.alphas_cumprod[t])
    x0 = torch.full((4000, 3, 2, 2), 0.6)
    xt = forward_noise(x0, t, train_scheduler, generator=torch.Generator().manual_seed(0))
    assert float(xt.mean()) == pytest.approx(np.sqrt(abar) * 0.6, abs=0.01)
    assert float(xt.var()) == pytest.approx(1 - abar, rel=0.03)
    again = forward_noise(x0[:5], t, train_scheduler, generator=row_generators(range(5)))
    first = forward_noise(x0[:2], t, train_scheduler, generator=row_generators(range(2)))
    torch.testing.assert_close(again[:2], first)


def test_renoising_from_t_to_s_is_the_forward_process_to_s(train_scheduler):
    # x_0 -> x_100 -> x_400 must have q(x_400 | x_0)'s closed-form moments
    abar = train_scheduler.alphas_cumprod.double()
    x0 = torch.full((6000, 3, 2, 2), -0.4)
    x_t = forward_noise(x0, 100, train_scheduler, generator=torch.Generator().manual_seed(1))
    x_s = renoise(x_t, 100, 400, train_scheduler, generator=torch.Generator().manual_seed(2))
    assert float(x_s.mean()) == pytest.approx(float(abar[400].sqrt()) * -0.4, abs=0.01)
    assert float(x_s.var()) == pytest.approx(float(1 - abar[400]), rel=0.03)
    torch.testing.assert_close(renoise(x_t[:3], 100, 100, train_scheduler), x_t[:3])
    with pytest.raises(ValueError, match="goes up"):
        renoise(x_t[:1], 400, 100, train_scheduler)


def test_t_to_above_t_from_is_refused(unet, train_scheduler):
    sched = make_scheduler(train_scheduler, "ddim")
    with pytest.raises(ValueError, match="lies above"):
        reverse(unet, sched, _noise(1), 200, 600, steps=10)


def test_the_saved_ddpm_is_a_diffusers_pipeline_folder(tmp_path):
    """DDIMPipeline.from_pretrained loads what save_ddpm wrote and samples from it."""
    import torch
    from diffusers import DDIMPipeline, DDPMScheduler, UNet2DModel

    from gammaface.diffusion.model_io import load_ddpm, save_ddpm
    from gammaface.diffusion.presets import unet_config

    torch.manual_seed(0)
    unet = UNet2DModel(**unet_config("tiny"))
    save_ddpm(tmp_path, unet, DDPMScheduler(num_train_timesteps=1000))
    pipe = DDIMPipeline.from_pretrained(tmp_path, use_safetensors=True)
    images = pipe(batch_size=2, num_inference_steps=3, generator=torch.Generator().manual_seed(0),
                  output_type="np").images
    assert images.shape == (2, unet.config.sample_size, unet.config.sample_size, 3)
    loaded, _ = load_ddpm(tmp_path)
    for a, b in zip(loaded.parameters(), unet.parameters()):
        assert torch.equal(a, b)


@pytest.mark.parametrize("kind", ["ddim", "ddpm"])
def test_early_exit_reads_the_x0_prediction_and_stops_only_the_rows_it_is_told(unet,
                                                                                train_scheduler,
                                                                                kind):
    sched, eta = make_scheduler(train_scheduler, kind), 1.0
    x = _noise(4)
    seeds = [1, 2, 3, 4]
    full = reverse(unet, sched, x, 600, 0, steps=10, generator=row_generators(seeds), eta=eta)
    n = evaluations(sched, 10, 600)
    seen = []

    def stop(x0, rows):
        seen.append((x0.clone(), rows.copy()))
        return np.isin(rows, [0, 2])  # rows 0 and 2 end at the first check

    out, ran, stopped = reverse_with_exits(unet, sched, x, 600, 10, row_generators(seeds), eta,
                                           [2, 4], stop)
    assert stopped.tolist() == [True, False, True, False] and ran.tolist() == [2, n, 2, n]
    # the finished rows are those of a run without exits (each row keeps its generator)
    torch.testing.assert_close(out[[1, 3]], full[[1, 3]], rtol=1e-5, atol=1e-5)
    assert [rows.tolist() for _, rows in seen] == [[0, 1, 2, 3], [1, 3]]
    # what a check sees is the closed form x0 = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t),
    # from the sample after the first step and the UNet's noise prediction there
    t = grid(sched, 10)[[g <= 600 for g in grid(sched, 10)].index(True) + 1]
    x_t = reverse(unet, sched, x, 600, t, steps=10, generator=row_generators(seeds), eta=eta)
    with torch.no_grad():
        eps = unet(x_t, torch.full((4,), t)).sample
    abar = train_scheduler.alphas_cumprod[t]
    x0 = (x_t - (1 - abar).sqrt() * eps) / abar.sqrt()
    if sched.config.clip_sample:  # as diffusers' steps clip it, to the data range
        x0 = x0.clamp(-sched.config.clip_sample_range, sched.config.clip_sample_range)
    torch.testing.assert_close(seen[0][0], x0, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(out[[0, 2]], seen[0][0][[0, 2]])

    # nothing stopped: exactly the run without exits
    same, ran, stopped = reverse_with_exits(unet, sched, x, 600, 10, row_generators(seeds), eta,
                                            [1], lambda x0, rows: np.zeros(len(rows), bool))
    torch.testing.assert_close(same, full, rtol=0, atol=0)
    assert not stopped.any() and ran.tolist() == [n] * 4
