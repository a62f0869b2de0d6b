import re
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import linalg, stats

from gammaface.downstream import compare
from gammaface.metrics.frechet import frechet_between, frechet_distance
from gammaface.metrics.intervals import Interval


def _results(seeds=5, gmm_shift=-0.1, noise=0.01):
    """Baseline Bias 0.30 + seed noise; gmm shifts it by `gmm_shift` on the same seed;
    unconditional leaves it; oversample lowers it by 0.05."""
    rng = np.random.default_rng(0)
    rows = []
    for seed in range(seeds):
        level = 0.30 + 0.03 * rng.standard_normal()
        rows.append({"method": "baseline", "mixing": "none", "ratio": 0.0, "seed": seed,
                     "bias": level, "accuracy": 0.80})
        for r in (0.3, 0.5):
            for method, shift in (("gmm", gmm_shift), ("unconditional", 0.0),
                                  ("oversample", -0.05)):
                rows.append({"method": method, "mixing": "augment", "ratio": r, "seed": seed,
                             "bias": level + shift + noise * rng.standard_normal(),
                             "accuracy": 0.78 + noise * rng.standard_normal()})
    df = pd.DataFrame(rows)
    df["n_per_class"], df["target"], df["protected"] = 50, "smile", "age,gender"
    df["bias/age:gender"] = df.pop("bias")
    df["worst_tpr/age:gender"] = 0.5 - df["bias/age:gender"] / 2
    df["tpr"] = 0.7
    df["ba/age:gender"] = df["ba_x100/age:gender"] = df["bpc/age:gender"] = 0.0
    df["kl_ref/age"] = 0.1
    return df


def _table(text):
    return [[c.strip() for c in line.strip("|").split("|")] for line in text.splitlines()
            if line.startswith("|")]


def test_differences_are_paired_by_seed_with_a_student_t_interval():
    df = _results()
    s = compare.summarise(df).set_index(["method", "ratio"])
    base = df[df["method"] == "baseline"].set_index("seed")
    for (method, ratio), g in df[df["method"] != "baseline"].groupby(["method", "ratio"]):
        d = (g.set_index("seed")["bias/age:gender"] - base["bias/age:gender"]).to_numpy()
        low, high = stats.t.interval(0.95, len(d) - 1, loc=d.mean(), scale=stats.sem(d))
        row = s.loc[(method, ratio)]
        assert (row["dB_mean"], row["dB_low"], row["dB_high"]) == (
            pytest.approx(d.mean()), pytest.approx(low), pytest.approx(high))
        assert row["B_mean"] == pytest.approx(g["bias/age:gender"].mean())
        assert row["B_std"] == pytest.approx(g["bias/age:gender"].std(ddof=1))
        assert row["seeds"] == 5 and row["dB_kind"] == "t"
    # pairing removes the seed-to-seed spread of the baseline (std 0.03), so the paired
    # interval is far narrower than one from the levels
    assert (s["dB_high"] - s["dB_low"]).max() / 2 < 0.03


def test_every_row_of_the_table_shows_its_difference_with_an_interval():
    s = compare.summarise(_results())
    text = compare.markdown(s, "smile", "age:gender")
    diff, levels = [t for t in _split_tables(text)]
    assert diff[0][:6] == ["n/class", "arm", "mixing", "ratio", "seeds", "ΔB ↓"]
    assert {"ΔAcc ↑", "ΔWTPR ↑", "ΔTPR ↑", "ΔBA ↓", "ΔKL_age ↓"} <= set(diff[0])
    for row in diff[2:]:
        cells = dict(zip(diff[0], row))
        if cells["arm"] == "baseline":
            assert cells["ΔB ↓"] == "reference"
        else:
            mean, low, high = re.match(r"([-+.\d]+) \[([-+.\d]+), ([-+.\d]+)\]",
                                       cells["ΔB ↓"]).groups()
            assert float(low) <= float(mean) <= float(high)
    assert "B ↓" in levels[0] and "WTPR ↑" in levels[0] and "Acc ↑" in levels[0]
    assert "Half-width of the ΔB interval" in text and "seeds." in text


def _split_tables(text):
    blocks, current = [], []
    for line in text.splitlines():
        if line.startswith("|"):
            current.append(line)
        elif current:
            blocks.append(_table("\n".join(current)))
            current = []
    if current:
        blocks.append(_table("\n".join(current)))
    return blocks


def _iv(mean, low, high, n=5):
    return Interval(mean, low, high, n, "t")


def test_the_verdicts_sentences_for_an_interval_below_around_and_above_zero_and_for_one_seed():
    acc_same = _iv(0.0, -0.01, 0.01)
    below = compare.bias_sentence("gmm", 0.5, _iv(-0.05, -0.08, -0.02), _iv(-0.02, -0.03, -0.01), 5)
    assert "reduces Bias by 0.0500" in below and "at an accuracy cost of 0.0200" in below
    around = compare.bias_sentence("gmm", 0.5, _iv(-0.02, -0.05, 0.01), acc_same, 5)
    assert "cannot tell whether it changes Bias" in around and "includes 0" in around
    assert "reduces" not in around and "because" not in around
    above = compare.bias_sentence("gmm", 0.5, _iv(0.04, 0.01, 0.07), acc_same, 5)
    assert "increases Bias by 0.0400" in above and "no accuracy change" in above
    one = compare.bias_sentence("gmm", 0.5, Interval(-0.2, -0.3, -0.1, 1, "bootstrap"), acc_same, 1)
    assert "cannot tell, with 1 seed (fewer than 3)" in one and "reduces" not in one
    two = compare.bias_sentence("gmm", 0.5, _iv(-0.2, -0.3, -0.1, 2), acc_same, 2)
    assert "cannot tell, with 2 seeds" in two


def test_the_verdict_names_the_arms_that_reduce_bias_and_compares_them_with_oversampling():
    lines = compare.verdict(_results())
    text = "\n".join(lines)
    assert "`gmm` at ratio 0.5 reduces Bias" in text
    assert "`unconditional` at ratio 0.5: cannot tell whether it changes Bias" in text
    assert "`gmm` against `oversample` at ratio 0.5: beats it" in text
    assert "`unconditional` against `oversample` at ratio 0.5: `oversample` is fairer" in text
    assert lines[-1].startswith("Arms that reduce Bias beyond their 95 % interval: `gmm` at 0.3")
    none = compare.verdict(_results(seeds=2))
    assert none[-1].endswith(": none.") and "reduces" not in "\n".join(none[:-1])


def test_a_single_seed_uses_the_stored_bootstrap_interval():
    df = _results(seeds=1)
    df["delta_low/bias/age:gender"], df["delta_high/bias/age:gender"] = -0.2, -0.01
    s = compare.summarise(df).set_index(["method", "ratio"])
    row = s.loc[("gmm", 0.5)]
    assert (row["dB_low"], row["dB_high"], row["dB_kind"]) == (-0.2, -0.01, "bootstrap")
    assert "ᵇ" in compare.markdown(s.reset_index(), "smile", "age:gender")


def test_bootstrap_differences_of_identical_predictions_are_zero_and_of_better_ones_positive():
    rng = np.random.default_rng(0)
    n = 400
    y = rng.integers(0, 2, n)
    groups = {"age": rng.choice(["old", "young"], n), "gender": rng.choice(["female", "male"], n)}
    base = np.where(rng.random(n) < 0.7, y, 1 - y)
    same = compare.bootstrap_differences(y, base, base, groups, True, 0, repeat=200)
    assert all(v == 0 for v in same.values())
    better = compare.bootstrap_differences(y, y, base, groups, True, 0, repeat=200)
    assert better["delta_low/accuracy"] > 0 and better["delta_low/worst_tpr/age:gender"] > 0
    # a perfect classifier has Bias 0, so its difference can only be <= 0
    assert better["delta_high/bias/age:gender"] <= 0


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


@pytest.mark.parametrize("n", [2000, 40])  # more images than features, and fewer (singular)
def test_frechet_distance_matches_the_matrix_square_root_of_the_reference_code(n):
    rng = np.random.default_rng(n)
    a, b = rng.normal(size=(n, 64)), rng.normal(size=(n, 64)) * 1.3 + 0.2
    (mu1, cov1), (mu2, cov2) = (a.mean(0), np.cov(a, rowvar=False)), (b.mean(0), np.cov(b, rowvar=False))
    # the reference FID code's general matrix square root (which warns of a singular product)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        covmean = np.real(linalg.sqrtm(cov1 @ cov2))
    reference = (mu1 - mu2) @ (mu1 - mu2) + np.trace(cov1) + np.trace(cov2) - 2 * np.trace(covmean)
    assert frechet_distance(mu1, cov1, mu2, cov2) == pytest.approx(reference, rel=1e-6)


def test_each_arm_is_scored_against_the_baseline_of_its_own_images_and_seed():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    frame = {"age": rng.integers(0, 2, 400), "gender": rng.integers(0, 2, 400)}

    def pred(y_pred):
        return pd.DataFrame({"y_true": y, "y_pred": y_pred, **frame})

    perfect, wrong = pred(y), pred(1 - y)
    seen = []

    def evaluate(p, base):
        seen.append(None if base is None else base["tag"])
        return {"tag": float((p["y_pred"] == p["y_true"]).mean()), "base": base}

    # the arms come first: their baselines are still scored before them
    jobs = [(("n20", 0), False, perfect, 1), (("n20", 1), False, perfect, 2),
            (("n40", 0), False, perfect, 3),
            (("n20", 0), True, perfect, 4), (("n20", 1), True, wrong, 5)]
    scored = compare.paired_scores(jobs, evaluate, ["age", "gender"], binary=True)
    assert seen[:2] == [None, None]  # the two baselines, unpaired
    assert [s["base"] for s in scored] == [{"tag": 1.0, "base": None}, {"tag": 0.0, "base": None},
                                           None, None, None]
    same, better, alone = scored[0], scored[1], scored[2]
    assert same["delta_low/accuracy"] == same["delta_high/accuracy"] == 0  # identical to its pair
    assert better["delta_low/accuracy"] > 0.9  # every image right against every image wrong
    assert not any(k.startswith("delta_") for k in alone)  # no baseline for its images
