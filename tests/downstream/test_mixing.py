import itertools

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gammaface.downstream.arms import Pools, water_fill
from gammaface.downstream.mixing import BASELINE, Job, jobs, mix
from gammaface.common.errors import UserError

PROTECTED = ["age", "gender"]
CELLS = [f"{a}:{g}" for a, g in itertools.product(["old", "young"], ["female", "male"])]


def _real(n=400, seed=0):
    rng = np.random.default_rng(seed)
    smile = rng.choice(["no", "yes"], n, p=[0.4, 0.6])
    # skewed like SynthFaces: smiling faces are mostly young and female
    young = rng.random(n) < np.where(smile == "yes", 0.85, 0.6)
    female = rng.random(n) < np.where(smile == "yes", 0.75, 0.4)
    return pd.DataFrame({"path": [f"r{i}.png" for i in range(n)], "smile": smile,
                         "age": np.where(young, "young", "old"),
                         "gender": np.where(female, "female", "male")})


def _generated(n=300, seed=1, drop=None):
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({"path": [f"g{i}.png" for i in range(n)],
                       "smile": rng.choice(["no", "yes"], n),
                       "age": rng.choice(["old", "young"], n, p=[0.3, 0.7]),
                       "gender": rng.choice(["female", "male"], n),
                       "component": rng.integers(0, 4, n)})
    for a in ("smile", *PROTECTED):
        df[f"{a}_conf"] = rng.uniform(0.5, 1.0, n)
    if drop is not None:  # a cell the generator never makes
        smile, age, gender = drop
        df = df[~((df["smile"] == smile) & (df["age"] == age) & (df["gender"] == gender))]
    return df.reset_index(drop=True)


def _mix(job, real=None, gen=None, conf=0.0):
    real = _real() if real is None else real
    gen = _generated() if gen is None else gen
    return mix(job, "smile", PROTECTED, Pools(real, "/real", gen, "/gen"), conf)


def _cells(table):
    """The final count of every (class, cell) of a training table, by its own file names."""
    real, gen = _real().set_index("path"), _generated().set_index("path")
    names = table["file"].str.rsplit("/", n=1).str[-1]
    rows = pd.concat([real, gen[real.columns]])
    labels = rows.loc[names]
    key = labels["age"].to_numpy() + ":" + labels["gender"].to_numpy()
    return pd.Series(table["weight"].to_numpy(), index=pd.MultiIndex.from_arrays(
        [table["label"].to_numpy(), key])).groupby(level=[0, 1]).sum()


def _expected_sizes(rule, ratio, n):
    """(real, added) per class straight from the definitions."""
    if rule == "replace":
        return n - round(ratio * n), round(ratio * n)
    if ratio == 1:
        return 0, n
    return n, round(ratio * n / (1 - ratio))


@settings(max_examples=40, deadline=None)
@given(rule=st.sampled_from(["augment", "replace", "fill", "oversample"]),
       ratio=st.sampled_from([0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 1.0]), n=st.integers(20, 120))
def test_counts_per_class_follow_each_rule(rule, ratio, n):
    if rule == "oversample" and ratio == 1:
        return  # a control keeps real images: it is not defined there
    table, counts = _mix(Job(n, "gmm" if rule != "oversample" else "oversample", ratio, 0, rule))
    n_real, n_add = _expected_sizes(rule, ratio, n)
    for c, cls in enumerate(["no", "yes"]):
        mine = table[table["label"] == c]
        assert (mine["source"] == "real").sum() == n_real == counts[f"real/{cls}"]
        added = mine["source"] != "real"
        assert added.sum() == n_add == counts[f"added/{cls}"]
        if n_real + n_add and 0 < ratio < 1 and rule != "replace":
            # the generated share is the ratio, to the rounding of one image
            assert abs(n_add / (n_real + n_add) - ratio) <= 1 / (n_real + n_add)
        want = "oversampled" if rule == "oversample" else "generated"
        assert set(mine.loc[added, "source"]) <= {want}
        counted = _cells(table)
        for cell in CELLS:
            assert counts[f"cell/{cls}/{cell}"] == counted.get((c, cell), 0)


def test_every_arm_keeps_the_real_images_of_its_baseline():
    base, _ = _mix(Job(100, BASELINE, 0.0, 3, "none"))
    base_files = set(base["file"])
    for rule in ("augment", "fill", "oversample", "reweight"):
        table, _ = _mix(Job(100, "x", 0.5, 3, rule))
        assert set(table.loc[table["source"] == "real", "file"]) == base_files, rule
    shrunk = {r: set(t.loc[t["source"] == "real", "file"]) for r, t in
              ((r, _mix(Job(100, "gmm", r, 3, "replace"))[0]) for r in (0.3, 0.5, 0.7))}
    assert shrunk[0.7] < shrunk[0.5] < shrunk[0.3] < base_files


def test_generated_images_meet_the_confidence_threshold_and_carry_their_component():
    gen = _generated()
    for rule in ("augment", "fill"):
        table, _ = _mix(Job(100, "gmm", 0.5, 0, rule), gen=gen, conf=0.7)
        picked = table[table["source"] == "generated"]
        rows = gen.set_index("path").loc[picked["file"].str.slice(len("/gen/"))]
        checked = ["smile"] + (PROTECTED if rule == "fill" else [])
        assert (rows[[f"{a}_conf" for a in checked]] >= 0.7).all().all()
        assert (rows["smile"].map(["no", "yes"].index).to_numpy() == picked["label"]).all()
        assert (picked["component"].to_numpy() == rows["component"].to_numpy()).all()


def _greedy(have, caps, extra):
    """One image at a time to the lowest cell with room left (first such cell on ties)."""
    have, add = np.array(have), np.zeros(len(have), int)
    for _ in range(min(extra, int(np.sum(caps)))):
        room = [i for i in range(len(have)) if add[i] < caps[i]]
        i = min(room, key=lambda j: (have[j] + add[j], j))
        add[i] += 1
    return add


@settings(max_examples=200, deadline=None)
@given(have=st.lists(st.integers(0, 30), min_size=1, max_size=6),
       caps=st.lists(st.integers(0, 25), min_size=6, max_size=6), extra=st.integers(0, 90))
def test_water_filling_equals_filling_the_lowest_cell_one_image_at_a_time(have, caps, extra):
    caps = caps[:len(have)]
    got = water_fill(np.array(have), np.array(caps), extra)
    ref = _greedy(have, caps, extra)
    # the same final counts as a multiset (the greedy may break ties among equal cells
    # differently only where they end at the same level)
    assert sorted(np.array(have) + got) == sorted(np.array(have) + ref)
    assert (got <= np.array(caps)).all() and got.sum() == min(extra, sum(caps))


def test_fill_evens_out_the_cells_and_says_which_it_could_not_fill():
    gen = _generated(600, drop=("yes", "old", "male"))
    table, counts = _mix(Job(100, "gmm_attr", 0.5, 0, "fill"), gen=gen)
    real_only, _ = _mix(Job(100, BASELINE, 0.0, 0, "none"))
    for cls in ("no", "yes"):
        final = [counts[f"cell/{cls}/{c}"] for c in CELLS]
        assert sum(final) == 200  # the same total as augment
    # the lowest cells raised first, as far as each cell's distinct pool reaches
    have = _cells(real_only)
    for c, cls in enumerate(("no", "yes")):
        start = [have.get((c, cell), 0) for cell in CELLS]
        mine = gen[gen["smile"] == cls]
        distinct = [((mine["age"] + ":" + mine["gender"]) == cell).sum() for cell in CELLS]
        want = np.array(start) + _greedy(start, distinct, 100)
        assert sorted(counts[f"cell/{cls}/{cell}"] for cell in CELLS) == sorted(want)
    assert "short/yes/old:male" in counts and counts["short/yes/old:male"] > 0
    assert counts["cell/yes/old:male"] == (_cells(real_only).get((1, "old:male"), 0))
    assert not any(k.startswith("short/no/") for k in counts)


def test_fill_repeats_images_only_once_the_pool_is_used_up():
    small = _generated(40)
    table, counts = _mix(Job(100, "gmm_attr", 0.5, 0, "fill"), gen=small)
    for c, cls in enumerate(("no", "yes")):
        gen_rows = table[(table["label"] == c) & (table["source"] == "generated")]
        pool = small[small["smile"] == cls]
        assert len(gen_rows) == 100
        assert counts[f"generated_distinct/{cls}"] == gen_rows["file"].nunique() == len(pool)


def test_reweight_gives_each_cell_the_weight_of_its_oversampled_count():
    over, over_counts = _mix(Job(100, "oversample", 0.5, 0, "oversample"))
    table, counts = _mix(Job(100, "reweight", 0.5, 0, "reweight"))
    assert (table["source"] == "real").all() and len(table) == 200
    assert table["weight"].mean() == pytest.approx(1.0)
    # a direct count: each cell's weight sum is its oversampled count, scaled by one factor
    weighted, direct = _cells(table), _cells(over)
    scale = len(table) / len(over)
    for key, count in direct.items():
        assert weighted[key] == pytest.approx(count * scale)
    real = _cells(table.assign(weight=1.0))
    for key in real.index:
        same_cell = table["weight"][(table["label"] == key[0]).to_numpy()]
        assert same_cell.min() > 0


def test_too_few_real_images_is_one_sentence_and_an_empty_fill_pool_too():
    with pytest.raises(UserError, match="n_per_class = 500 needs 500 real 'no' images"):
        _mix(Job(500, BASELINE, 0.0, 0, "none"))
    none_sure = _generated().assign(age_conf=0.1)
    with pytest.raises(UserError, match="no 'no' image confident .* on smile and age, gender"):
        _mix(Job(100, "gmm", 0.5, 0, "fill"), gen=none_sure, conf=0.5)


def test_the_grid_trains_controls_only_where_real_images_stay():
    js = jobs([50], [BASELINE, "gmm", "gmm:fill", "oversample", "reweight"], [0.0, 0.5, 1.0], 2)
    by = {(j.method, j.ratio) for j in js}
    assert (BASELINE, 0.0) in by and ("gmm", 1.0) in by and ("gmm:fill", 1.0) in by
    assert ("oversample", 0.5) in by and ("oversample", 1.0) not in by
    assert {j.mixing for j in js if j.method == "gmm"} == {"augment"}
    assert {j.mixing for j in js if j.method == "gmm:fill"} == {"fill"}
    assert len({j.folder for j in js}) == len(js) and all(":" not in j.folder for j in js)
    assert {j.mixing for j in jobs([50], ["gmm"], [0.5], 1, "replace")} == {"replace"}
