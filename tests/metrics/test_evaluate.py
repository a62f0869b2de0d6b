import math

import numpy as np
import pytest

from gammaface.metrics import fairness as F
from gammaface.metrics.evaluate import evaluate, intersection_labels, per_group_table


def _data(n=600, seed=0):
    rng = np.random.default_rng(seed)
    yt = rng.integers(0, 2, n)
    yp = np.where(rng.random(n) < 0.8, yt, 1 - yt)
    scores = np.clip(0.5 * yp + 0.5 * rng.random(n), 0, 1)
    protected = {"age": rng.choice(["young", "old"], n, p=[0.8, 0.2]),
                 "gender": rng.choice(["female", "male"], n)}
    return yt, yp, scores, protected


def test_intersection_labels():
    codes, names = intersection_labels({"age": ["young", "old", "old", "young"],
                                        "gender": ["male", "male", "female", "male"]})
    assert names == ["old:female", "old:male", "young:male"]
    assert list(codes) == [2, 1, 0, 2]
    with pytest.raises(ValueError, match="missing at index 1"):
        intersection_labels({"age": ["young", None]})


def test_evaluate_values_equal_the_functions():
    yt, yp, s, prot = _data()
    r = evaluate(yt, yp, s, prot)
    codes, names = intersection_labels(prot)
    assert r["accuracy"] == pytest.approx(np.mean(yt == yp))
    assert r["tpr"] == pytest.approx(F.tpr(yt, yp))
    assert r["bias/age:gender"] == pytest.approx(F.bias(yt, yp, codes))
    assert r["ba/age:gender"] == pytest.approx(F.ba_a_to_t(yt, yp, codes))
    assert r["ba_x100/age:gender"] == pytest.approx(100 * r["ba/age:gender"])
    age, _ = intersection_labels({"age": prot["age"]})
    assert r["deo/age"] == pytest.approx(F.deo(yt, yp, age))
    assert r["kl_ref/age"] == pytest.approx(F.kl_ref(s, yt, age))
    assert r["kl_fixed_range/gender"] > 0
    assert "deo/age:gender" not in r  # four groups: DEO and KL need a binary group
    table = per_group_table(r, "age:gender")
    assert list(table.index) == names
    assert table["n"].sum() == len(yt)
    for i, name in enumerate(names):
        assert table.loc[name, "tpr"] == pytest.approx(F.tpr(yt[codes == i], yp[codes == i]))


def test_bpc_against_baseline_and_itself():
    yt, yp, s, prot = _data()
    base = evaluate(yt, yp, s, prot)
    assert evaluate(yt, yp, s, prot, baseline=base)["bpc/age"] == 0
    better = yp.copy()
    better[yt == 1] = 1  # perfect recall: no bias left
    r = evaluate(yt, better, None, prot, baseline=base)
    assert r["bias/age"] == 0
    assert r["bpc/age"] == pytest.approx(1 - (base["tpr"] - 1) / base["tpr"])


def test_multiclass_target_uses_macro_tpr_and_classwise_bias():
    rng = np.random.default_rng(3)
    yt = rng.integers(0, 3, 300)
    yp = np.where(rng.random(300) < 0.7, yt, rng.integers(0, 3, 300))
    r = evaluate(yt, yp, None, {"race": rng.choice(["white", "black", "other"], 300)})
    assert r["tpr"] == pytest.approx(F.tpr(yt, yp, average="macro"))
    assert "bias_classwise/race" in r and not math.isnan(r["bias_classwise/race"])


def test_every_key_is_a_valid_mlflow_metric_name():
    from mlflow.utils.validation import _validate_metric_name

    yt, yp, s, prot = _data()
    for key in evaluate(yt, yp, s, prot):
        _validate_metric_name(key)


def test_worst_group_tpr_is_the_lowest_recall_of_any_group():
    from sklearn.metrics import recall_score

    yt, yp, s, prot = _data(seed=3)
    r = evaluate(yt, yp, s, prot)
    codes, names = intersection_labels(prot)
    recalls = [recall_score(yt[codes == i], yp[codes == i]) for i in range(len(names))]
    assert r["worst_tpr/age:gender"] == pytest.approx(min(recalls))
    age = prot["age"]
    assert r["worst_tpr/age"] == pytest.approx(min(recall_score(yt[age == a], yp[age == a])
                                                   for a in ("old", "young")))


def test_ba_takes_its_directions_from_the_training_labels():
    # a balanced evaluation set: every (gender, smile) cell holds 10 images, so directions
    # estimated on it are all 0 and BA is 0 whatever the classifier predicts
    gender = np.repeat(["female", "male"], 20)
    smile = np.tile(np.repeat([0, 1], 10), 2)
    pred = (gender == "female").astype(int)  # amplifies "women smile" completely
    plain = evaluate(smile, pred, None, {"gender": gender})
    assert plain["ba/gender"] == 0.0
    # a training set where women smile and men do not: directions +1 on (female, 1) and
    # (male, 0), -1 on the others; every Delta is +-0.5 with the direction's sign, so BA = 0.5
    train_gender = np.array(["female"] * 30 + ["male"] * 30)
    train_smile = np.array([1] * 25 + [0] * 5 + [1] * 5 + [0] * 25)
    directed = evaluate(smile, pred, None, {"gender": gender},
                        train=(train_smile, {"gender": train_gender}))
    assert directed["ba/gender"] == pytest.approx(0.5)
    assert directed["ba_x100/gender"] == pytest.approx(50.0)
    # with the evaluation labels as training labels it is the single-label reference
    rng = np.random.default_rng(0)
    g, y, p = rng.choice(["a", "b", "c"], 300), rng.integers(0, 2, 300), rng.integers(0, 2, 300)
    same = evaluate(y, p, None, {"g": g}, train=(y, {"g": g}))
    assert same["ba/g"] == pytest.approx(F.ba_a_to_t(y, p, intersection_labels({"g": g})[0]))
