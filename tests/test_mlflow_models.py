"""The DDPM and the attribute classifier as registered MLflow models that load without
unpickling anything: from the registry, against diffusers' own pipeline and the classifier."""

from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from diffusers import DDIMPipeline, DDPMScheduler, UNet2DModel
from mlflow.tracking import MlflowClient

from gammaface.run import tracking
from gammaface.classifiers import labeller as labeller_io
from gammaface.classifiers.model import AttributeNet
from gammaface.diffusion.model_io import PIPELINE_FILES, save_ddpm
from gammaface.diffusion.presets import unet_config


@pytest.fixture
def store(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracking.use_tracking_uri(uri)
    mlflow.set_experiment("models")
    yield uri
    while mlflow.active_run():
        mlflow.end_run()


def _no_pickle(model_uri: str) -> None:
    local = Path(mlflow.artifacts.download_artifacts(model_uri))
    assert not [p for p in local.rglob("*") if p.suffix in (".pkl", ".pickle", ".cloudpickle")]
    assert "model_code_path" in (local / "MLmodel").read_text()  # rebuilt by running code


def test_the_ddpm_loads_from_the_registry_and_draws_what_diffusers_draws(store, tmp_path):
    torch.manual_seed(0)
    unet = UNet2DModel(**unet_config("tiny"))
    folder = tmp_path / "ddpm"
    save_ddpm(folder, unet, DDPMScheduler(num_train_timesteps=1000))
    (folder / "ray_train").mkdir()  # checkpoints beside it stay out of the model
    with mlflow.start_run():
        uri = tracking.register_ddpm(str(folder), list(PIPELINE_FILES), 8, "toy-ddpm")
    _no_pickle(uri)
    version = MlflowClient(store).get_latest_versions("toy-ddpm")[0]
    assert version.run_id and int(version.version) == 1
    model = mlflow.pyfunc.load_model("models:/toy-ddpm/1")
    assert [p.name for p in model.metadata.get_params_schema().params] == ["steps"]
    images = model.predict(pd.DataFrame({"seed": [3, 4]}), params={"steps": 5})
    assert images.shape == (2, 8, 8, 3) and images.dtype == np.uint8
    pipe = DDIMPipeline.from_pretrained(folder)
    ref = pipe(batch_size=2, generator=[torch.Generator().manual_seed(s) for s in (3, 4)],
               num_inference_steps=5, output_type="np").images
    assert np.abs(images.astype(int) - (ref * 255).round().astype(int)).max() <= 1
    assert not any("ray_train" in a.path for a in
                   MlflowClient(store).list_artifacts(version.run_id, "ddpm/artifacts/ddpm"))


def test_the_classifier_loads_from_the_registry_and_labels_as_the_classifier_does(store, tmp_path):
    torch.manual_seed(0)
    attrs = ["gender", "age"]
    net = AttributeNet("resnet18", attrs, 16)
    labeller_io.save(tmp_path / "clf", net, "resnet18", 16)
    with mlflow.start_run():
        uri = tracking.register_labeller(str(tmp_path / "clf"),
                                         [labeller_io.INFO_FILE, labeller_io.WEIGHTS_FILE], 16,
                                         attrs, "toy-labeller")
    _no_pickle(uri)
    images = np.random.default_rng(0).integers(0, 256, (5, 16, 16, 3), dtype=np.uint8)
    got = mlflow.pyfunc.load_model("models:/toy-labeller/latest").predict(images)
    want = labeller_io.Labeller.load(tmp_path / "clf").frame(images)
    pd.testing.assert_frame_equal(got.reset_index(drop=True), want)
    assert list(got.columns) == ["gender", "gender_conf", "age", "age_conf"]


def test_nothing_is_registered_outside_a_run(store, tmp_path):
    assert tracking.register_ddpm(str(tmp_path), list(PIPELINE_FILES), 8, "never") is None
    assert MlflowClient(store).search_registered_models() == []
