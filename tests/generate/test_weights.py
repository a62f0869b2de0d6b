import numpy as np
import pandas as pd
import pytest
from scipy.optimize import minimize

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


def test_components_that_are_pure_cells_are_mixed_equally():
    comp = np.eye(4)
    np.testing.assert_allclose(balance.balancing_weights(comp), np.full(4, 0.25), atol=1e-4)


def test_compositions_with_hard_assignments_are_the_cell_shares_per_component():
    rng = np.random.default_rng(0)
    comp_of_row = rng.integers(0, 3, 300)
    df = pd.DataFrame({"gender": rng.choice(["female", "male"], 300),
                       "race": rng.choice(["white", "black", "other", None], 300)})
    codes = balance.cell_codes(df, ["gender", "race"])
    assert (codes[df["race"].isna().to_numpy()] == -1).all()
    resp = np.eye(3)[comp_of_row]
    comp = balance.compositions(resp, codes, 6)
    known = df[df["race"].notna()].assign(k=comp_of_row[df["race"].notna().to_numpy()])
    cells = balance.cells(["gender", "race"])
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
