import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats

from gammaface.data import manifest, registry, synthfaces
from gammaface.data.synthfaces_spec import DEFAULT_SPEC, UNIFORM_SPEC, Spec
from gammaface.common.errors import UserError
from gammaface.common.images import load_rgb


def _joint_counts(df):
    counts = np.zeros(Spec(DEFAULT_SPEC).joint().shape)
    for row in df[list(registry.ATTRIBUTE_NAMES)].itertuples(index=False):
        counts[tuple(registry.get(a).index(v) for a, v in zip(registry.ATTRIBUTE_NAMES, row))] += 1
    return counts


def test_empirical_joint_matches_spec():
    spec = Spec(DEFAULT_SPEC)
    n = 40000
    df = synthfaces.sample_labels(n, seed=3, spec=spec)
    observed = _joint_counts(df).ravel()
    expected = spec.joint().ravel() * n
    assert expected.sum() == pytest.approx(n)
    keep = expected > 0
    assert observed[~keep].sum() == 0
    # pool cells with small expectation so the chi-square approximation holds
    small = keep & (expected < 5)
    obs = np.append(observed[keep & ~small], observed[small].sum())
    exp = np.append(expected[keep & ~small], expected[small].sum())
    _, p = stats.chisquare(obs, exp)
    assert p > 1e-3


def test_default_spec_is_biased_as_documented():
    joint = Spec(DEFAULT_SPEC).joint()
    axes = {a: i for i, a in enumerate(registry.ATTRIBUTE_NAMES)}

    def marginal(attr):
        return joint.sum(axis=tuple(i for a, i in axes.items() if a != attr))

    assert marginal("age")[registry.AGE.index("old")] == pytest.approx(0.2)
    assert min(marginal("race")) == pytest.approx(0.15)
    p_smile = joint.sum(axis=(axes["race"], axes["glasses"], axes["hair"]))[..., 1]  # age x gender
    p_ag = joint.sum(axis=(axes["race"], axes["smile"], axes["glasses"], axes["hair"]))
    smile_rate = p_smile / p_ag
    assert smile_rate[0, 0] == smile_rate.max()  # young female smiles most
    p_glasses = joint.sum(axis=(axes["race"], axes["smile"], axes["hair"]))[..., 1]
    glasses_rate = p_glasses / p_ag
    assert glasses_rate[1, 1] == glasses_rate.max()  # old male wears glasses most


def test_splits_and_balanced_test():
    df = synthfaces.sample_labels(5000, seed=1, train=0.6, val=0.2, balanced_test=True)
    assert df["split"].value_counts().to_dict() == {"train": 3000, "val": 1000, "test": 1000}
    test = df[df["split"] == "test"]
    train = df[df["split"] == "train"]
    assert abs((test["age"] == "old").mean() - 0.5) < 0.06
    assert abs((test["race"] == "black").mean() - 1 / 3) < 0.06
    assert (train["age"] == "old").mean() < 0.26


@pytest.mark.parametrize("spec, fragment", [
    ({**DEFAULT_SPEC, "age": {"young": 0.7, "old": 0.2}}, "age sums to 0.9"),
    ({**DEFAULT_SPEC, "age": {"young": 0.8, "ancient": 0.2}}, "class 'ancient'"),
    ({k: v for k, v in DEFAULT_SPEC.items() if k != "hair"}, "'hair' has no distribution"),
    ({**DEFAULT_SPEC, "mood": {"x": 1.0}}, "unknown attribute 'mood'"),
    ({**DEFAULT_SPEC, "hair": {"given": ["race"], "table": {"white": {"black": 1.0}}}},
     "has no row for 'black'"),
    ({**DEFAULT_SPEC, "age": {"given": ["gender"], "table": {"female": {"young": 1.0},
                                                            "male": {"young": 1.0}}},
      "gender": {"given": ["age"], "table": {"young": {"male": 1.0}, "old": {"male": 1.0}}}},
     "cycle"),
])
def test_bad_spec_is_refused(spec, fragment):
    with pytest.raises(UserError, match=fragment):
        Spec(spec)


def test_spec_from_yaml(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text("age: {young: 0.5, old: 0.5}\ngender: {female: 0.5, male: 0.5}\n"
                    "race: {white: 0.2, black: 0.4, other: 0.4}\nsmile: {no: 0.5, yes: 0.5}\n"
                    "glasses: {no: 0.5, yes: 0.5}\n"
                    "hair:\n  given: [race]\n  table:\n    white: {brown: 1.0}\n"
                    "    black: {black: 1.0}\n    other: {other: 1.0}\n")
    df = synthfaces.sample_labels(300, seed=0, spec=Spec.from_yaml(path))
    pairs = set(zip(df["race"], df["hair"]))
    assert pairs == {("white", "brown"), ("black", "black"), ("other", "other")}


def test_same_seed_same_bytes_in_process(tmp_path):
    a = synthfaces.build(tmp_path / "a", n=24, size=16, seed=5, use_ray=False)
    b = synthfaces.build(tmp_path / "b", n=24, size=16, seed=5, use_ray=False)
    synthfaces.build(tmp_path / "c", n=24, size=16, seed=6, use_ray=False)
    assert a.equals(b)
    for p in a["path"]:
        assert (tmp_path / "a" / p).read_bytes() == (tmp_path / "b" / p).read_bytes()
    assert any((tmp_path / "a" / p).read_bytes() != (tmp_path / "c" / p).read_bytes() for p in a["path"])


def test_ray_rendering_equals_in_process_rendering(tmp_path, ray_local):
    synthfaces.build(tmp_path / "ray", n=300, size=24, seed=2, use_ray=True)
    local = synthfaces.build(tmp_path / "local", n=300, size=24, seed=2, use_ray=False)
    df, root = manifest.read(tmp_path / "ray" / manifest.MANIFEST_FILE)
    assert df.equals(local)
    for p in df["path"]:
        assert (tmp_path / "ray" / p).read_bytes() == (tmp_path / "local" / p).read_bytes()
    assert load_rgb(tmp_path / "ray" / df["path"][0]).shape == (24, 24, 3)


@pytest.mark.parametrize("size", [16, 64])
def test_any_size_renders(size):
    rows = synthfaces.sample_labels(2, seed=0)
    png = synthfaces.render_row(rows.iloc[0].to_dict(), size, seed=0, index=0)
    from io import BytesIO

    from PIL import Image

    assert Image.open(BytesIO(png)).size == (size, size)


class _SmallCnn(torch.nn.Module):
    def __init__(self):
        super().__init__()
        conv = torch.nn.Conv2d

        def block(cin, cout):
            return [conv(cin, cout, 3, padding=1), torch.nn.BatchNorm2d(cout), torch.nn.ReLU()]

        self.body = torch.nn.Sequential(
            *block(3, 32), *block(32, 32), torch.nn.MaxPool2d(2),
            *block(32, 64), *block(64, 64), torch.nn.MaxPool2d(2),
            torch.nn.Flatten(), torch.nn.Linear(64 * 4 * 4, 128), torch.nn.ReLU())
        self.heads = torch.nn.ModuleDict(
            {a: torch.nn.Linear(128, registry.get(a).n_classes) for a in registry.ATTRIBUTE_NAMES})

    def forward(self, x):
        z = self.body(x)
        return {a: h(z) for a, h in self.heads.items()}


def _tensors(tmp_path, n, seed):
    df = synthfaces.build(tmp_path / f"set{seed}", n=n, size=16, seed=seed, spec=Spec(UNIFORM_SPEC),
                          train=1.0, val=0.0, use_ray=False)
    x = np.stack([load_rgb(tmp_path / f"set{seed}" / p) for p in df["path"]])
    x = torch.from_numpy(x).permute(0, 3, 1, 2).float() / 127.5 - 1
    y = {a: torch.tensor([registry.get(a).index(v) for v in df[a]]) for a in registry.ATTRIBUTE_NAMES}
    return x, y


def test_every_cue_is_learnable_at_16px(tmp_path):
    """A small CNN trained briefly on 2000 faces recognises every attribute on held-out faces."""
    torch.manual_seed(0)
    x, y = _tensors(tmp_path, 2000, seed=10)
    xt, yt = _tensors(tmp_path, 600, seed=11)
    model = _SmallCnn()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    epochs, batch = 14, 64
    # annealed to zero so the last epoch does not land on a noisy step
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, epochs=epochs,
                                                steps_per_epoch=-(-len(x) // batch))
    for epoch in range(epochs):
        model.train()
        perm = torch.randperm(len(x))
        for i in range(0, len(x), batch):
            idx = perm[i:i + batch]
            out = model(x[idx])
            loss = sum(torch.nn.functional.cross_entropy(out[a], y[a][idx]) for a in out)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    model.eval()
    with torch.no_grad():
        out = model(xt)
    acc = {a: float((out[a].argmax(1) == yt[a]).float().mean()) for a in out}
    assert all(v >= 0.95 for v in acc.values()), acc


def test_cli_writes_images_manifest_and_summary(tmp_path):
    import subprocess
    import sys

    out = tmp_path / "sf"
    proc = subprocess.run([sys.executable, "-m", "gammaface", "data", "synthfaces", "--out", str(out),
                           "--n", "30", "--size", "16", "--seed", "4", "--no-ray"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "30 rows: train 24, val 3, test 3" in proc.stdout
    df, root = manifest.read(out / manifest.MANIFEST_FILE)
    assert all((out / p).is_file() for p in df["path"])
    bad = subprocess.run([sys.executable, "-m", "gammaface", "data", "synthfaces", "--out",
                          str(tmp_path / "bad"), "--size", "8"], capture_output=True, text=True)
    assert bad.returncode == 2 and "--size must lie between 16 and 128" in bad.stderr
    assert not (tmp_path / "bad" / manifest.MANIFEST_FILE).exists()


def test_an_evaluation_set_has_equal_cells_and_no_image_of_the_training_render(tmp_path):
    from gammaface.data import synthfaces as sf
    from gammaface.data.synthfaces_spec import DEFAULT_SPEC, Spec

    attributes = ["smile", "age", "gender"]
    labels = sf.sample_cell_labels(attributes, 7, seed=0)
    assert labels.groupby(attributes).size().tolist() == [7] * 8
    assert (labels["split"] == "test").all()
    train = sf.build(tmp_path / "train", n=40, size=16, seed=0, use_ray=False)
    ev = sf.build_eval(tmp_path / "eval", attributes, 3, size=16, seed=0, use_ray=False)
    assert len(ev) == 24
    train_bytes = {(tmp_path / "train" / p).read_bytes() for p in train["path"]}
    eval_bytes = {(tmp_path / "eval" / p).read_bytes() for p in ev["path"]}
    assert not train_bytes & eval_bytes and len(eval_bytes) == 24
    # within a cell the other attributes follow the spec given the cell (race, from the joint)
    spec = Spec(DEFAULT_SPEC)
    many = sf.sample_cell_labels(["age"], 20000, seed=2)
    old = many[many["age"] == "old"]
    joint = spec.joint()
    names = registry.ATTRIBUTE_NAMES
    age_axis, race_axis = names.index("age"), names.index("race")
    old_index = registry.get("age").classes.index("old")
    p = np.take(joint, old_index, axis=age_axis)
    other = tuple(i for i in range(p.ndim) if i != (race_axis - (race_axis > age_axis)))
    p_race = p.sum(axis=other) / p.sum()
    seen = old["race"].value_counts(normalize=True).reindex(registry.get("race").classes).fillna(0)
    assert np.abs(seen.to_numpy() - p_race).max() < 0.02


def test_equal_cells_keeps_the_smallest_cells_count_everywhere():
    from gammaface.data.cells import equal_cells

    df = pd.DataFrame({"age": ["old"] * 3 + ["young"] * 10, "gender": ["male"] * 13})
    got = equal_cells(df, ["age", "gender"], most=100, seed=0)
    assert got.groupby("age").size().to_dict() == {"old": 3, "young": 3}
    assert equal_cells(df, ["age"], most=2, seed=0).groupby("age").size().to_dict() == {
        "old": 2, "young": 2}
