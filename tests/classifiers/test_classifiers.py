import json

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF

from gammaface import config
from gammaface.commands import pipeline
from gammaface.run import stage
from gammaface.classifiers.augment import blur, degrade
from gammaface.classifiers.labeller import LabelBatch, Labeller
from gammaface.classifiers.labels import MISSING, decode, encode
from gammaface.classifiers.model import AttributeNet
from gammaface.classifiers.train_loop import masked_loss
from gammaface.data import manifest
from gammaface.common.errors import UserError
from gammaface.storage.store import Store
from tests import mlflow_helpers


@pytest.mark.parametrize("sigma", [0.6, 1.0, 1.5])
def test_blur_matches_torchvision_gaussian_blur(sigma):
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    radius = int(np.ceil(2 * sigma))
    ref = TF.gaussian_blur(x, kernel_size=[2 * radius + 1] * 2, sigma=[sigma, sigma])
    torch.testing.assert_close(blur(x, torch.full((2,), sigma)), ref, atol=1e-5, rtol=1e-5)


def test_degrade_leaves_images_alone_at_p_zero_and_pales_them_at_p_one():
    x = torch.rand(8, 3, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1
    torch.testing.assert_close(degrade(x, torch.Generator().manual_seed(0), p=0.0), x)
    y = degrade(x, torch.Generator().manual_seed(0), p=1.0, max_noise=0.0)
    assert y.std() < x.std() and y.min() >= -1 and y.max() <= 1


def test_masked_loss_is_the_cross_entropy_over_known_rows_of_each_attribute():
    logits = {"gender": torch.randn(5, 2), "race": torch.randn(5, 3)}
    y = torch.tensor([[0, MISSING], [1, 2], [MISSING, 0], [1, MISSING], [0, 1]])
    loss = masked_loss(logits, y, ["gender", "race"])
    ref = F.cross_entropy(logits["gender"][[0, 1, 3, 4]], torch.tensor([0, 1, 1, 0])) + \
        F.cross_entropy(logits["race"][[1, 2, 4]], torch.tensor([2, 0, 1]))
    torch.testing.assert_close(loss, ref)
    all_missing = torch.full((5, 2), MISSING)
    assert masked_loss(logits, all_missing, ["gender", "race"]).item() == 0.0


def test_every_head_gets_a_gradient_even_on_a_batch_without_its_labels():
    """DDP reduces every parameter's gradient on every rank: a head left out of one rank's
    graph (a batch with no race label there) stops the step. Each head must be in the graph,
    with a zero gradient where the batch holds no label for it."""
    net = AttributeNet("resnet18", ["gender", "race", "hair"], 16)
    x = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([[0, MISSING, MISSING], [1, MISSING, 2], [0, MISSING, MISSING],
                      [1, MISSING, MISSING]])
    masked_loss(net(x), y, ["gender", "race", "hair"]).backward()
    race = [p.grad for n, p in net.named_parameters() if "race" in n]
    hair = [p.grad for n, p in net.named_parameters() if "hair" in n]
    assert race and all(g is not None and torch.count_nonzero(g) == 0 for g in race)
    assert hair and all(g is not None for g in hair) and any(torch.count_nonzero(g) for g in hair)


def test_labels_encode_in_registry_order_with_missing_for_null():
    df = pd.DataFrame({"race": ["other", None, "white"], "smile": ["yes", "no", None]})
    codes = encode(df, ["race", "smile", "glasses"])
    assert codes.tolist() == [[2, 1, MISSING], [MISSING, 0, MISSING], [0, MISSING, MISSING]]
    assert list(decode(codes[:, 0], "race")) == ["other", None, "white"]


def test_small_inputs_keep_spatial_detail_in_the_stem():
    net = AttributeNet("resnet18", ["gender"], 16)
    assert net.backbone.conv1.kernel_size == (3, 3) and isinstance(net.backbone.maxpool, torch.nn.Identity)
    assert net(torch.zeros(2, 3, 16, 16))["gender"].shape == (2, 2)
    assert AttributeNet("resnet18", ["gender"], 64).backbone.conv1.kernel_size == (7, 7)


def test_a_folder_without_a_classifier_is_refused(tmp_path):
    with pytest.raises(UserError, match="no trained attribute classifier"):
        Labeller.load(tmp_path)


def test_two_workers_learn_the_easy_attributes_and_label_test_images_at_that_accuracy(tmp_path, ray_local):
    cfg = config.from_dict({
        "workdir": str(tmp_path / "work"), "mlflow": {"experiment": "cls"},
        "data": {"synthfaces": {"n": 700, "size": 16}}, "ddpm": {"preset": "small"},
        "classifiers": {"backbone": "resnet18", "epochs": 4, "batch_size": 32,
                        "learning_rate": 0.001, "num_workers": 2, "max_failures": 0}})
    pipeline.run(cfg, ["prepare", "train_classifiers"], echo=lambda s: None)
    folder = tmp_path / "work" / "classifiers"
    metrics = json.loads((folder / "metrics.json").read_text())
    for easy in ("gender", "glasses"):
        assert metrics["clean"][f"accuracy/{easy}"] >= 0.9, metrics["clean"]
    assert set(metrics["degraded"]) == set(metrics["clean"])
    run = mlflow_helpers.stage_run(tmp_path / "work", "cls", "train_classifiers")
    assert "clean/accuracy/gender" in run.data.metrics and "loss" in run.data.metrics

    df, root = manifest.read(tmp_path / "work" / "data" / "synthfaces" / manifest.MANIFEST_FILE)
    test = df[df["split"] == "test"].reset_index(drop=True)
    # the Ray Data actor's map, called as it is, on the test images as if they were generated
    labelled = LabelBatch(str(folder), root, threads=1, use_gpu=False)(test[["path"]])
    for attr in cfg.classifiers.attributes:
        agreement = float((labelled[attr] == test[attr]).mean())
        assert agreement == pytest.approx(metrics["clean"][f"accuracy/{attr}"])


def test_two_workers_train_every_head_when_most_rows_lack_race_and_some_lack_hair(tmp_path, ray_local):
    """Under DDP a head with no label in one rank's batch must still take part in the step, or
    the gradient reduction fails; FFHQ's and FairFace's nulls make such batches common."""
    cfg = config.from_dict({
        "workdir": str(tmp_path / "work"), "mlflow": {"experiment": "nulls"},
        "data": {"synthfaces": {"n": 200, "size": 16}}, "ddpm": {"preset": "small"},
        "classifiers": {"backbone": "resnet18", "epochs": 2, "batch_size": 8, "image_size": 8,
                        "num_workers": 2, "max_failures": 0}})
    pipeline.run(cfg, ["prepare"], echo=lambda s: None)
    folder = tmp_path / "work" / "data" / "synthfaces"
    df, _ = manifest.read(folder / manifest.MANIFEST_FILE)
    train = df.index[df["split"] == "train"]
    df.loc[train[3:], "race"] = None       # three labelled rows: nearly every batch has none
    df.loc[train[::4], "hair"] = None      # hidden hair, as in FFHQ
    manifest.write(df, Store(str(folder)), ".")
    # the edit stands in for a dataset with these nulls: record it as prepare's own output
    record = json.loads((folder / "stage.json").read_text())
    record["files"] = stage.digests(Store(str(folder)))
    (folder / "stage.json").write_text(json.dumps(record))
    results = pipeline.run(cfg, ["train_classifiers"], echo=lambda s: None)
    assert not results[0].skipped
    metrics = json.loads((tmp_path / "work" / "classifiers" / "metrics.json").read_text())
    assert {f"accuracy/{a}" for a in cfg.classifiers.attributes} <= set(metrics["clean"])
