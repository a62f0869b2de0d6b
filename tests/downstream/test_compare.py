import numpy as np
import pandas as pd
import pytest

from gammaface.downstream import compare
from gammaface.metrics.frechet import frechet_between, frechet_distance
from gammaface.downstream.compare import verdict


def _results():
    rng = np.random.default_rng(0)
    rows = []
    for seed in range(3):
        rows.append({"method": "baseline", "ratio": 0.0, "bias": 0.30 + 0.01 * seed})
        for r in (0.5, 1.0):
            rows.append({"method": "gmm", "ratio": r, "bias": 0.10 + rng.uniform(0, 0.01)})
            rows.append({"method": "unconditional", "ratio": r, "bias": 0.2})
    df = pd.DataFrame(rows)
    df["seed"] = np.arange(len(df)) % 3
    df["n_per_class"], df["target"], df["protected"] = 50, "smile", "age,gender"
    df["bias/age:gender"] = df.pop("bias")
    df["accuracy"] = 0.8
    df["ba/age:gender"] = df["ba_x100/age:gender"] = df["bpc/age:gender"] = 0.0
    df["kl_ref/age"] = 0.1
    return df


def test_summary_is_the_mean_and_sample_std_over_seeds():
    df = _results()
    s = compare.summarise(df).set_index(["method", "ratio"])
    for (method, ratio), g in df.groupby(["method", "ratio"]):
        assert s.loc[(method, ratio), "B_mean"] == pytest.approx(g["bias/age:gender"].mean())
        assert s.loc[(method, ratio), "B_std"] == pytest.approx(g["bias/age:gender"].std(ddof=1))
        assert s.loc[(method, ratio), "seeds"] == 3
    assert list(compare.summarise(df)["method"][:1]) == ["baseline"]
    text = compare.markdown(compare.summarise(df), "smile", "age:gender")
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in text.splitlines()
            if line.startswith("|")]
    assert rows[0][:4] == ["n/class", "method", "ratio", "B ↓"] and "KL_age ↓" in rows[0]
    gmm = next(r for r in rows if r[1:3] == ["gmm", "0.5"])
    mean = df[(df["method"] == "gmm") & (df["ratio"] == 0.5)]["bias/age:gender"]
    assert gmm[0] == "50" and gmm[3] == f"{mean.mean():.4f} ± {mean.std(ddof=1):.4f}"


def test_the_verdict_says_whether_the_paper_rule_helps_and_against_which_controls():
    lines = verdict(compare.summarise(_results()), 0.5)
    assert "`gmm` reduces Bias" in lines[0] and "keeps accuracy" in lines[0]
    assert "lower Bias than every control" in lines[1]
    df = _results()
    df.loc[df["method"] == "gmm", "bias/age:gender"] = 0.5
    lines = verdict(compare.summarise(df), 0.5)
    assert "`gmm` increases Bias" in lines[0]
    assert "`unconditional`" in lines[1] and "not what helps" in lines[1]


def test_frechet_distance_has_the_closed_form_for_diagonal_covariances():
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    s1, s2 = np.array([1.0, 4.0, 0.25]), np.array([4.0, 1.0, 1.0])
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(s1) - np.sqrt(s2)) ** 2)
    assert frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2)) == pytest.approx(expected)
    assert frechet_distance(mu1, np.diag(s1), mu1, np.diag(s1)) == pytest.approx(0.0, abs=1e-9)


def test_frechet_between_samples_approaches_the_population_value():
    rng = np.random.default_rng(0)
    a = rng.normal(0, 1, (20000, 4))
    b = rng.normal(0.5, 2, (20000, 4))
    assert frechet_between(a, b) == pytest.approx(4 * 0.25 + 4 * 1.0, rel=0.05)


def test_inception_fid_says_why_it_is_skipped_instead_of_downloading(tmp_path, monkeypatch):
    from gammaface.classifiers import inception

    monkeypatch.setenv(inception.WEIGHTS_ENV, str(tmp_path / "missing.pth"))
    reason = inception.unavailable()
    assert reason is not None
    assert "torchmetrics" in reason or str(tmp_path / "missing.pth") in reason
