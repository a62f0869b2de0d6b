import numpy as np
import pandas as pd
import pytest

from gammaface.downstream.mixing import BASELINE, Job, jobs, mix
from gammaface.errors import UserError


def _real(n=400, seed=0):
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"path": [f"r{i}.png" for i in range(n)],
                         "smile": rng.choice(["no", "yes"], n, p=[0.4, 0.6])})


def _generated(n=300, seed=1):
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"path": [f"g{i}.png" for i in range(n)],
                         "smile": rng.choice(["no", "yes"], n),
                         "smile_conf": rng.uniform(0.5, 1.0, n),
                         "component": rng.integers(0, 4, n)})


@pytest.mark.parametrize("ratio", [0.0, 0.3, 0.5, 0.7, 1.0])
def test_counts_per_source_class_and_component_match_the_ratio(ratio):
    gen = _generated()
    job = Job(100, "gmm", ratio, 0)
    table, counts = mix(job, "smile", _real(), "/real", gen, "/gen", 0.6)
    n_gen = int(round(ratio * 100))
    for c, cls in enumerate(["no", "yes"]):
        mine = table[table["label"] == c]
        assert len(mine) == 100  # the class count is held fixed
        assert (mine["source"] == "generated").sum() == n_gen == counts.get(f"generated/{cls}", 0)
        assert (mine["source"] == "real").sum() == 100 - n_gen == counts[f"real/{cls}"]
    picked = table[table["source"] == "generated"]
    by_name = gen.set_index("path")
    names = picked["file"].str.slice(len("/gen/"))
    assert (by_name.loc[names, "smile_conf"] >= 0.6).all()  # the confidence threshold holds
    assert (by_name.loc[names, "smile"].map(["no", "yes"].index).to_numpy() == picked["label"]).all()
    assert (picked["component"].to_numpy() == by_name.loc[names, "component"].to_numpy()).all()
    assert (table.loc[table["source"] == "real", "component"] == -1).all()


def test_ratios_only_swap_real_for_generated_images():
    real, gen = _real(), _generated()
    sets = {r: mix(Job(100, "gmm", r, 3), "smile", real, "/real", gen, "/gen", 0.0)[0]
            for r in (0.3, 0.5, 0.7)}
    real_files = {r: set(t.loc[t["source"] == "real", "file"]) for r, t in sets.items()}
    gen_files = {r: set(t.loc[t["source"] == "generated", "file"]) for r, t in sets.items()}
    assert real_files[0.7] < real_files[0.5] < real_files[0.3]
    assert gen_files[0.3] < gen_files[0.5] < gen_files[0.7]


def test_too_few_real_images_is_one_sentence_and_too_few_generated_are_reused():
    with pytest.raises(UserError, match="n_per_class = 500 needs 500 real 'no' images"):
        mix(Job(500, BASELINE, 0.0, 0), "smile", _real(), "/r", None, None, 0.0)
    table, counts = mix(Job(200, "gmm", 1.0, 0), "smile", _real(), "/r", _generated(100), "/g", 0.0)
    assert (table["label"] == 0).sum() == 200
    assert counts["generated_distinct/no"] < 200


def test_the_baseline_runs_only_at_ratio_zero_and_methods_only_above_it():
    js = jobs([50, 100], [BASELINE, "gmm", "unconditional"], [0.0, 0.5, 1.0], 2)
    assert len(js) == 2 * 2 * (1 + 2 * 2)
    assert {j.ratio for j in js if j.method == BASELINE} == {0.0}
    assert {j.ratio for j in js if j.method != BASELINE} == {0.5, 1.0}
    assert len({j.folder for j in js}) == len(js)
