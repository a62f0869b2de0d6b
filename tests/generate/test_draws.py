import json
from dataclasses import fields

import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler, UNet2DModel

from gammaface.data import manifest, synthfaces
from gammaface.common.images import load_resized, to_model_space
from gammaface.diffusion.model_io import save_ddpm
from gammaface.diffusion.presets import unet_config
from gammaface.diffusion.sampler import forward_noise, make_scheduler, reverse, row_generators
from gammaface.generate.draws import Renderer
from gammaface.generate.specs import (DRAWS, GaussianDraw, ImagesDraw, NoiseDraw, ResampleDraw,
                                      read_sampling, write_sampling)
from gammaface.generate.plan import image_seed
from gammaface.gmm.projection import Projection


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("draws")
    torch.manual_seed(0)
    save_ddpm(root / "ddpm", UNet2DModel(**unet_config("tiny")), DDPMScheduler(num_train_timesteps=1000))
    synthfaces.build(root / "data", n=20, size=16, seed=0, use_ray=False)
    return root


def _renderer(assets, **kw):
    _, image_root = manifest.read(assets / "data" / manifest.MANIFEST_FILE)
    args = dict(ddpm_dir=str(assets / "ddpm"), t_star=300, steps=10, eta=0.0, temperature=1.0,
                image_root=image_root, latent_dir=None, batch_size=4, threads=1, use_gpu=False)
    return Renderer(**{**args, **kw})


def _gens(seed, n):
    return row_generators([image_seed(seed, i) for i in range(n)])


def test_gaussian_draws_have_the_components_mean_and_tempered_variance(assets):
    r = _renderer(assets, temperature=0.5)
    d = 3 * 8 * 8
    mu = np.stack([np.zeros(d), np.linspace(-1, 1, d)]).astype(np.float32)
    var = np.stack([np.ones(d), np.full(d, 4.0)]).astype(np.float32)
    x, level = r.start(GaussianDraw(mu, var), 1, 4000, 5, _gens(5, 4000))
    flat = x.reshape(4000, -1).numpy()
    assert level == 300 and x.shape == (4000, 3, 8, 8)
    np.testing.assert_allclose(flat.mean(0), mu[1], atol=0.1)
    np.testing.assert_allclose(flat.var(0).mean(), 0.25 * 4.0, rtol=0.05)


def test_gaussian_draws_in_pca_space_map_back_with_the_discarded_variance(assets):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((400, 192)).astype(np.float32)
    proj = Projection.fit(X, 8)
    z_mu, z_var = np.zeros((1, 8), np.float32), np.ones((1, 8), np.float32)
    spec = GaussianDraw(z_mu, z_var, proj.mean, proj.components, np.array(proj.residual_variance))
    x, _ = _renderer(assets).start(spec, 0, 2000, 1, _gens(1, 2000))
    flat = x.reshape(2000, -1).numpy()
    total = 8 * 1.0 + (192 - 8) * proj.residual_variance
    assert flat.var(0).sum() == pytest.approx(total, rel=0.05)


def test_forward_resample_noises_the_picked_source_images_with_each_images_generator(assets):
    r = _renderer(assets)
    df, root = manifest.read(assets / "data" / manifest.MANIFEST_FILE)
    paths = list(df["path"][:6])
    probs = np.zeros((2, 6))
    probs[1, 4] = 1.0  # component 1 owns latent 4 alone
    spec = ResampleDraw(probs, "forward", paths)
    x, level = r.start(spec, 1, 3, 11, _gens(11, 3))
    x0 = to_model_space(load_resized(root, [paths[4]] * 3, 8))
    expected = forward_noise(x0, 300, DDPMScheduler(num_train_timesteps=1000), _gens(11, 3))
    assert level == 300
    torch.testing.assert_close(x, expected)


def test_a_quota_start_level_noises_the_picked_source_that_far_up(assets):
    r = _renderer(assets)
    df, root = manifest.read(assets / "data" / manifest.MANIFEST_FILE)
    paths = list(df["path"][:6])
    probs = np.zeros((1, 6))
    probs[0, 2] = 1.0
    spec = ResampleDraw(probs, "forward", paths, t_start=600)
    x, level = r.start(spec, 0, 3, 4, _gens(4, 3))
    x0 = to_model_space(load_resized(root, [paths[2]] * 3, 8))
    expected = forward_noise(x0, 600, DDPMScheduler(num_train_timesteps=1000), _gens(4, 3))
    assert level == 600
    torch.testing.assert_close(x, expected)


def test_unconditional_images_are_the_plain_sampler_from_each_images_noise(assets):
    r = _renderer(assets)
    images = r.render(NoiseDraw(), -1, 5, 3)
    gens = _gens(3, 5)
    x_T = torch.stack([torch.randn(3, 8, 8, generator=g) for g in gens])
    sched = make_scheduler(DDPMScheduler(num_train_timesteps=1000), "ddim")
    out = reverse(UNet2DModel.from_pretrained(assets / "ddpm" / "unet"), sched, x_T, 1000, 0, 10)
    ref = ((out.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    assert np.abs(images.astype(int) - ref.astype(int)).max() <= 1
    # an image does not depend on the batch it was finished in, up to the rounding of a value
    # that lands on a half: the convolutions may add in another order for another batch size
    other = _renderer(assets, batch_size=2).render(NoiseDraw(), -1, 5, 3)
    diff = np.abs(images.astype(int) - other.astype(int))
    assert diff.max() <= 1 and (diff > 0).mean() < 0.01


def test_sampling_files_round_trip_every_kind_of_draw(tmp_path):
    probs = np.eye(2)
    written = [NoiseDraw(), ImagesDraw({"0": ["a.png"], "3": ["b.png"]}),
               GaussianDraw(np.zeros((2, 4)), np.ones((2, 4))),
               GaussianDraw(np.zeros((1, 2)), np.ones((1, 2)), np.zeros(8), np.ones((2, 8)),
                            np.array(0.5)),
               ResampleDraw(probs, "reverse", ["x.png", "y.png"]),
               ResampleDraw(probs, "forward", ["x.png", "y.png"], t_start=600)]
    assert {type(w) for w in written} <= set(DRAWS.values())  # every kind built in
    for i, spec in enumerate(written):
        write_sampling(tmp_path / f"{i}.npz", spec)
        back = read_sampling(tmp_path / f"{i}.npz")
        assert type(back) is type(spec)
        for f in fields(spec):
            want, got = getattr(spec, f.name), getattr(back, f.name)
            if isinstance(want, np.ndarray):
                np.testing.assert_array_equal(got, want)
            else:
                assert got == want and type(got) is type(want), (f.name, got, want)
    # nothing in the file needs unpickling
    with np.load(tmp_path / "5.npz", allow_pickle=False) as z:
        assert json.loads(str(z["meta"])) == {"kind": "resample", "source": "forward",
                                              "source_paths": ["x.png", "y.png"]}
        assert int(z["t_start"]) == 600


def test_an_unknown_draw_kind_in_a_sampling_file_is_named(tmp_path):
    np.savez(tmp_path / "s.npz", meta=np.array(json.dumps({"kind": "teleport"})))
    with pytest.raises(ValueError, match="s.npz: unknown draw kind 'teleport'"):
        read_sampling(tmp_path / "s.npz")
