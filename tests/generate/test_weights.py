import numpy as np
import pandas as pd
import pytest
from scipy.optimize import minimize

from gammaface.data.cells import cell_codes
from gammaface.data.cells import cells as cells_of
from gammaface.generate import weights as balance
from gammaface.metrics.generation import fairness_discrepancy


def _objective(w, comp):
    return float(np.sum((w @ comp - 1.0 / comp.shape[1]) ** 2))


@pytest.mark.parametrize("seed", range(5))
def test_balancing_weights_match_a_general_constrained_solver(seed):
    rng = np.random.default_rng(seed)
    comp = rng.dirichlet(np.full(12, 0.4), size=5)
    w = balance.balancing_weights(comp)
    assert (w >= 0).all() and w.sum() == pytest.approx(1.0)
    ref = minimize(_objective, np.full(5, 0.2), args=(comp,), method="SLSQP",
                   bounds=[(0, 1)] * 5, constraints=[{"type": "eq", "fun": lambda x: x.sum() - 1}],
                   options={"ftol": 1e-14, "maxiter": 1000})
    assert _objective(w, comp) <= ref.fun + 1e-6


@pytest.mark.parametrize("seed", range(5))
def test_the_ridge_costs_under_a_thousandth_of_discrepancy(seed):
    rng = np.random.default_rng(100 + seed)
    comp = rng.dirichlet(np.full(12, 0.4), size=6)
    exact = balance.balancing_weights(comp, ridge=0.0)
    spread = balance.balancing_weights(comp)
    d_exact = balance.discrepancy(exact @ comp)
    assert balance.discrepancy(spread @ comp) <= d_exact + 1e-3


def test_equally_good_mixes_are_spread_over_components_not_put_on_a_vertex():
    # components 0 and 1 are alike, as are 2 and 3: every w with w0 + w1 = 0.5 is optimal
    comp = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    result = balance.balance_components(comp, np.ones(4))
    assert result.solved
    np.testing.assert_allclose(result.weights, np.full(4, 0.25), atol=1e-3)
    assert balance.discrepancy(result.weights @ comp) < 1e-3  # still the predicted balance


def test_identical_compositions_fall_back_to_equal_weights_and_say_why():
    comp = np.tile([0.7, 0.2, 0.1], (4, 1))
    result = balance.balance_components(comp, np.ones(4))
    assert not result.solved and "same composition" in result.fallback
    np.testing.assert_array_equal(result.weights, np.full(4, 0.25))


def test_components_without_labelled_images_fall_back_to_equal_weights():
    # the FFHQ case: no source image has race, so every composition is unknown (all uniform)
    df = pd.DataFrame({"gender": ["female", "male"] * 50, "race": [None] * 100})
    codes = cell_codes(df, ["gender", "race"])
    comp, mass = balance.compositions(np.eye(3)[np.arange(100) % 3], codes, 6)
    assert (mass == 0).all()
    result = balance.balance_components(comp, mass)
    assert not result.solved and "no component" in result.fallback
    np.testing.assert_array_equal(result.weights, np.full(3, 1 / 3))


def test_a_solution_on_one_component_falls_back_to_equal_weights():
    # component 0 is balanced on its own and mixing in either other one only skews it
    comp = np.array([[0.5, 0.5], [0.9, 0.1], [0.8, 0.2]])
    assert balance.balancing_weights(comp)[0] > 0.999
    result = balance.balance_components(comp, np.ones(3))
    assert not result.solved and "component 0" in result.fallback
    np.testing.assert_array_equal(result.weights, np.full(3, 1 / 3))


def test_components_that_are_pure_cells_are_mixed_equally():
    comp = np.eye(4)
    np.testing.assert_allclose(balance.balancing_weights(comp), np.full(4, 0.25), atol=1e-4)


def test_compositions_with_hard_assignments_are_the_cell_shares_per_component():
    rng = np.random.default_rng(0)
    comp_of_row = rng.integers(0, 3, 300)
    df = pd.DataFrame({"gender": rng.choice(["female", "male"], 300),
                       "race": rng.choice(["white", "black", "other", None], 300)})
    codes = cell_codes(df, ["gender", "race"])
    assert (codes[df["race"].isna().to_numpy()] == -1).all()
    resp = np.eye(3)[comp_of_row]
    comp, mass = balance.compositions(resp, codes, 6)
    np.testing.assert_allclose(mass, np.bincount(comp_of_row[df['race'].notna().to_numpy()], minlength=3))
    known = df[df["race"].notna()].assign(k=comp_of_row[df["race"].notna().to_numpy()])
    cells = cells_of(["gender", "race"])
    for k in range(3):
        mine = known[known["k"] == k]
        for j, (g, r) in enumerate(cells):
            assert comp[k, j] == pytest.approx(((mine["gender"] == g) & (mine["race"] == r)).mean())


def test_predicted_balance_equals_the_discrepancy_of_a_set_drawn_exactly_so():
    comp = np.array([[0.5, 0.0, 0.5, 0.0], [0.0, 0.25, 0.25, 0.5]])  # gender x smile... 2 x 2 cells
    protected = ["gender", "glasses"]
    w = np.array([0.4, 0.6])
    table = balance.predicted_balance({"mix": w}, comp, protected)
    dist = w @ comp  # 1000 images in exactly these shares
    counts = np.rint(dist * 1000).astype(int)
    cell = np.repeat(np.arange(4), counts)
    gender, glasses = np.divmod(cell, 2)
    row = table.iloc[0]
    assert row["discrepancy/gender"] == pytest.approx(fairness_discrepancy(gender, 2))
    assert row["discrepancy/glasses"] == pytest.approx(fairness_discrepancy(glasses, 2))
    assert row["discrepancy/gender:glasses"] == pytest.approx(fairness_discrepancy(cell, 4))
    assert row["share/gender/female"] == pytest.approx(dist[:2].sum())


def test_a_warning_names_each_attribute_equal_weights_push_away_from_uniform():
    # a big balanced component and a small all-female one: equal weights make the set female
    comp = np.array([[0.25, 0.25, 0.25, 0.25], [0.5, 0.5, 0.0, 0.0]])
    table = balance.predicted_balance({"gmm": np.array([0.5, 0.5]),
                                       "gmm_weighted": np.array([0.9, 0.1])}, comp,
                                      ["gender", "glasses"])
    warnings = balance.equal_weight_warnings(table, ["gender", "glasses"])
    assert len(warnings) == 2 and "gender further from uniform" in warnings[0]
    assert "gender:glasses" in warnings[1]
