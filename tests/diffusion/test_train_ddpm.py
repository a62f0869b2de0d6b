import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch
from diffusers import UNet2DModel
from safetensors.torch import load_file

from gammaface import config
from gammaface.commands import pipeline
from gammaface.distributed import train as checkpoint
from gammaface.diffusion.model_io import load_ddpm
from gammaface.diffusion.presets import unet_config
from gammaface.common.errors import UserError
from tests import mlflow_helpers

REPO = Path(__file__).resolve().parents[2]
SMOKE = REPO / "jobs" / "smoke.yaml"
QUIET = dict(echo=lambda s: None)


def _cfg(work, **overrides):
    return config.load(SMOKE, {"workdir": str(work), **overrides})


def _latest_checkpoint(work: Path) -> Path:
    snapshot = next((work / "ddpm" / "ray_train").glob("*/checkpoint_manager_snapshot.json"))
    return sorted(p for p in snapshot.parent.iterdir() if p.is_dir() and p.name.startswith("checkpoint_"))[-1]


# 20 steps on 2 workers (DDP over gloo), checkpoints and sample grids every 10, the loss every 5
DDP = {"ddpm.train_steps": 20, "ddpm.num_workers": 2, "ddpm.checkpoint_every": 10,
       "ddpm.sample_every": 10, "ddpm.log_every": 5}


def test_two_worker_ddp_training_writes_a_plain_diffusers_model(tmp_path, ray_local):
    work = tmp_path / "work"
    cfg = _cfg(work, **DDP)
    temporary = set(Path(tempfile.gettempdir()).iterdir())
    pipeline.run(cfg, ["prepare", "train_ddpm"], **QUIET)
    # the final checkpoint is read where Ray keeps it, not copied to a folder left behind
    assert not [p for p in set(Path(tempfile.gettempdir()).iterdir()) - temporary
                if p.name.startswith("gammaface-")]
    record = json.loads((work / "ddpm" / "stage.json").read_text())
    assert record["stage"] == "train_ddpm"
    assert record["rows"] == {"train_images": 160, "steps": 20}
    state = json.loads((_latest_checkpoint(work) / checkpoint.STATE_FILE).read_text())
    assert state["step"] == 20 and state["world_size"] == 2
    assert (work / "ddpm" / "samples.png").is_file()

    # the saved model is the last checkpoint's EMA weights in a UNet of the configured shape,
    # built here by hand from the checkpoint's state dict
    ours, _ = load_ddpm(work / "ddpm")
    ema = load_file(str(_latest_checkpoint(work) / checkpoint.EMA_FILE))
    by_hand = UNet2DModel(**unet_config(cfg.ddpm.preset, cfg.ddpm_resolution))
    by_hand.load_state_dict(ema)
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([10, 900])
    with torch.no_grad():
        torch.testing.assert_close(ours(x, t).sample, by_hand(x, t).sample, rtol=0, atol=0)
    assert ours.state_dict().keys() == ema.keys()
    assert all(torch.equal(ours.state_dict()[k], v) for k, v in ema.items())
    assert not list((work / "ddpm" / "unet").glob("*.bin"))

    run = mlflow_helpers.stage_run(work, "gammaface-smoke", "train_ddpm")
    assert {"loss", "lr", "images_per_s"} <= set(run.data.metrics)
    history = mlflow_helpers.client(work).get_metric_history(run.info.run_id, "loss")
    assert [m.step for m in history] == [5, 10, 15, 20]
    artifacts = {a.path for a in mlflow_helpers.client(work).list_artifacts(run.info.run_id)}
    assert {"images", "samples.png"} <= artifacts  # grids through log_image, with their step
    (logged,) = mlflow_helpers.client(work).get_run(run.info.run_id).inputs.dataset_inputs
    assert logged.dataset.name == "DDPM train split"
    assert {t.key: t.value for t in logged.tags}["mlflow.data.context"] == "training"


# long enough after the first checkpoint (about 10 s) for the kill to land inside training
RESUME = {"ddpm.train_steps": 80, "ddpm.checkpoint_every": 20, "ddpm.num_workers": 1,
          "ddpm.sample_every": 0, "ddpm.log_every": 20}


def _kill_after_first_checkpoint(work: Path) -> None:
    args = [sys.executable, "-m", "gammaface", "run", str(SMOKE), "--workdir", str(work),
            "--stages", "prepare,train_ddpm"]
    for k, v in RESUME.items():
        args += ["--set", f"{k}={v}"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.time() + 240
        while time.time() < deadline:
            if list((work / "ddpm" / "ray_train").glob("*/checkpoint_manager_snapshot.json")):
                break
            assert proc.poll() is None, "training ended before it could be interrupted"
            time.sleep(0.2)
        else:
            pytest.fail("no checkpoint appeared")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert not (work / "ddpm" / "stage.json").exists()


def test_interrupted_training_resumes_and_matches_an_uninterrupted_run(tmp_path, ray_local, capfd):
    reference = tmp_path / "reference"
    pipeline.run(_cfg(reference, **RESUME), ["prepare", "train_ddpm"], **QUIET)

    work = tmp_path / "interrupted"
    _kill_after_first_checkpoint(work)
    capfd.readouterr()
    pipeline.run(_cfg(work, **RESUME), ["prepare", "train_ddpm"], **QUIET)
    out = capfd.readouterr()
    assert "resuming DDPM training from step" in out.out + out.err

    a = load_file(str(work / "ddpm" / "unet" / "diffusion_pytorch_model.safetensors"))
    b = load_file(str(reference / "ddpm" / "unet" / "diffusion_pytorch_model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)

    # a corrupt checkpoint stops the rerun with a sentence
    (work / "ddpm" / "stage.json").unlink()
    latest = _latest_checkpoint(work)
    (latest / checkpoint.EMA_FILE).write_bytes(b"not safetensors")
    with pytest.raises(UserError, match="is corrupt: ema.safetensors does not load"):
        pipeline.run(_cfg(work, **RESUME), ["train_ddpm"], **QUIET)


def test_checkpoint_from_another_config_or_incomplete_is_refused(tmp_path):
    folder = tmp_path / "ckpt"
    weights = {"w": torch.zeros(2)}
    checkpoint.save_checkpoint(folder, weights, weights, {"optimizer": {}}, {"step": 3, "config_hash": "aaaa"})
    assert checkpoint.checkpoint_state(folder, "aaaa")["step"] == 3
    with pytest.raises(checkpoint.CheckpointError, match="was written for config aaaa, not the current bbbb"):
        checkpoint.checkpoint_state(folder, "bbbb")
    (folder / checkpoint.OPTIMIZER_FILE).unlink()
    with pytest.raises(checkpoint.CheckpointError, match="incomplete: optimizer.pt is missing"):
        checkpoint.checkpoint_state(folder, "aaaa")


def test_operational_settings_do_not_change_the_stage_hash():
    a = config.from_dict({})
    b = config.from_dict({"ddpm": {"max_failures": 5, "log_every": 1}})
    c = config.from_dict({"ddpm": {"train_steps": 5}})
    assert pipeline.stage_hash("train_ddpm", a) == pipeline.stage_hash("train_ddpm", b)
    assert pipeline.stage_hash("train_ddpm", a) != pipeline.stage_hash("train_ddpm", c)


def test_a_model_that_is_not_safetensors_is_refused(tmp_path):
    torch.manual_seed(0)
    from gammaface.diffusion.presets import unet_config

    UNet2DModel(**unet_config("tiny")).save_pretrained(tmp_path / "unet", safe_serialization=False)
    with pytest.raises(UserError, match="does not load as safetensors"):
        load_ddpm(tmp_path)
