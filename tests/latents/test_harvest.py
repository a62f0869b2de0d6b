import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler, UNet2DModel

from gammaface import config
from gammaface.data import manifest, synthfaces
from gammaface.common.images import load_resized, to_model_space
from gammaface.diffusion.model_io import save_ddpm
from gammaface.diffusion.presets import unet_config
from gammaface.diffusion.sampler import forward_noise, make_scheduler, reverse, row_generators
from gammaface.common.errors import UserError
from gammaface.latents import store
from gammaface.latents.harvest import row_seed, source_images
from gammaface.run.stage import StageContext
from gammaface.stages.harvest import work as harvest_stage
from gammaface.storage.store import Store


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    """A random tiny DDPM in diffusers layout and a small SynthFaces manifest."""
    root = tmp_path_factory.mktemp("assets")
    torch.manual_seed(0)
    save_ddpm(root / "ddpm", UNet2DModel(**unet_config("tiny")), DDPMScheduler(num_train_timesteps=1000))
    synthfaces.build(root / "data", n=40, size=16, seed=0, use_ray=False)
    return root


def _cfg(**harvest):
    return config.from_dict({"seed": 3, "harvest": {"n": 50, "steps": 10, "t_star": 300, **harvest}})


def _harvest(assets, tmp_path, name, **harvest):
    out = Store(tmp_path / name)
    ctx = StageContext(_cfg(**harvest), Store(assets), "harvest", lambda stage: "unused",
                       echo=lambda s: None,
                       folders={"prepare": "data", "train_ddpm": "ddpm", "harvest": out.root})
    harvest_stage.run(ctx)
    return out.read_json(store.META_FILE), store.read_index(out), store.load_rows(out)


@pytest.mark.parametrize("source", ["forward", "reverse"])
def test_a_rows_latent_does_not_depend_on_batching_or_pool_size(assets, tmp_path, ray_local, source):
    meta, idx_a, a = _harvest(assets, tmp_path, "a", source=source, batch_size=8)
    _, idx_b, b = _harvest(assets, tmp_path, "b", source=source, batch_size=20, concurrency=2)
    assert a.shape == (50, 3 * 8 * 8) and meta["shape"] == [3, 8, 8] and meta["t_star"] == 300
    assert list(idx_a["row"]) == list(range(50))
    # the reverse path runs the UNet, whose float sums depend on batch shape and thread count
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 if source == "reverse" else 1e-6)
    assert list(idx_a["seed"]) == list(idx_b["seed"])
    assert idx_a["shard"].nunique() == 7 and idx_b["shard"].nunique() == 3


def test_forward_latents_are_their_source_images_noised(assets, tmp_path, ray_local):
    _, index, X = _harvest(assets, tmp_path, "f", source="forward", batch_size=16)
    df, root = manifest.read(assets / "data" / manifest.MANIFEST_FILE)
    train = list(df.loc[df["split"] == "train", "path"])
    assert list(index["source_path"]) == [train[i] for i in source_images(np.arange(50), len(train), 3)]
    assert index["source_path"].nunique() == len(train)  # 50 rows cycle over the 32 train images
    rows = [0, 41]
    x0 = to_model_space(load_resized(root, [index["source_path"][r] for r in rows], 8))
    expected = forward_noise(x0, 300, DDPMScheduler(num_train_timesteps=1000),
                             row_generators([row_seed(3, r) for r in rows]))
    np.testing.assert_allclose(X[rows], expected.reshape(2, -1).numpy(), rtol=1e-5, atol=1e-6)


def test_reverse_latents_are_the_sampler_stopped_at_t_star(assets, tmp_path, ray_local):
    _, index, X = _harvest(assets, tmp_path, "r", source="reverse", batch_size=16, t_star=333)
    unet = UNet2DModel.from_pretrained(assets / "ddpm" / "unet")
    sched = make_scheduler(DDPMScheduler(num_train_timesteps=1000), "ddim")
    gens = row_generators([row_seed(3, r) for r in (5, 17)])
    x_T = torch.stack([torch.randn(3, 8, 8, generator=g) for g in gens])
    expected = reverse(unet, sched, x_T, 1000, 333, 10)
    np.testing.assert_allclose(X[[5, 17]], expected.reshape(2, -1).numpy(), rtol=1e-4, atol=1e-4)
    assert (index["source_path"] == "").all()


def test_t_star_outside_the_schedule_is_refused(assets, tmp_path, ray_local):
    with pytest.raises(UserError, match="harvest.t_star = 1000"):
        _harvest(assets, tmp_path, "x", t_star=1000)
