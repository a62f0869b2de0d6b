"""Quota generation's rounds, on a simulated proposal whose components have known cell
distributions: exact counts, a cell no component can make, acceptance-driven weights, and
rounds that depend on nothing but the rounds before them."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gammaface.generate import quota
from gammaface.generate.plan import NO_COMPONENT


def _marks(shard, comp, conf_rate=0.9):
    """What a labeller would say of a shard's renders: cells drawn from the component's
    distribution, confident with probability conf_rate; a function of the shard's seed alone."""
    rng = np.random.default_rng(shard.seed)
    row = comp[max(shard.component, 0)]
    cells = rng.choice(len(row), size=shard.count, p=row)
    confident = rng.random(shard.count) < conf_rate
    return np.stack([cells, confident.astype(np.int64)], axis=1)


def _run(comp, targets, proposal="adaptive", budget=50_000, shard_size=100, prior=None,
         max_rounds=40, marks=_marks):
    k = comp.shape[0] if proposal != "unconditional" else 1
    components = list(range(k)) if proposal != "unconditional" else [NO_COMPONENT]
    r = quota.QuotaRun("quota_x", 9, proposal, components, np.asarray(targets), budget,
                       shard_size, 0, max_rounds, prior=prior, unet_per_render=21)
    while True:
        shards = r.next_round()
        if not shards:
            return r
        r.absorb(shards, {s.shard: marks(s, comp) for s in shards})


@given(n=st.integers(1, 5000), shares=st.lists(st.floats(0, 10), min_size=1, max_size=24))
def test_targets_sum_exactly_and_follow_the_shares(n, shares):
    if sum(shares) <= 0:
        shares[0] = 1.0
    t = quota.targets(len(shares), n, np.array(shares))
    assert t.sum() == n and (t >= 0).all()
    exact = n * np.array(shares) / sum(shares)
    assert np.all(np.abs(t - exact) < 1.0 + 1e-9)  # largest remainder: each within one image


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(12, 600), n_cells=st.integers(2, 12),
       k=st.integers(1, 5), proposal=st.sampled_from(["adaptive", "mixture", "unconditional"]))
def test_every_cell_is_filled_exactly(seed, n, n_cells, k, proposal):
    rng = np.random.default_rng(seed)
    comp = rng.dirichlet(np.ones(n_cells), size=k) * 0.9 + 0.1 / n_cells  # every cell reachable
    shares = rng.random(n_cells) + 0.05
    t = quota.targets(n_cells, n, shares)
    r = _run(comp, t, proposal)
    assert r.stopped == "full"
    np.testing.assert_array_equal(r.tally.kept, t)
    kept_total = sum(len(v) for v in r.kept.values())
    assert kept_total == n
    # kept images are ones the labeller put confidently in their cell
    for s in r.plan:
        m = _marks(s, comp)
        for i in r.kept[s.shard]:
            assert m[i, 1] == 1


def test_a_cell_no_proposal_makes_stops_at_the_budget_and_says_by_how_much():
    comp = np.array([[0.5, 0.5, 0.0], [0.2, 0.8, 0.0]])
    t = np.array([50, 50, 50])
    r = _run(comp, t, "adaptive", budget=3000)
    assert r.stopped == "budget"
    assert int(r.tally.renders.sum()) <= 3000
    s = quota.summary(r.tally, t, ["a", "b", "c"], unet_per_render=21)
    assert [c["short"] for c in s["cells"]] == [0, 0, 50]
    assert s["cells"][2]["acceptance"] == 0.0 and s["cells"][2]["renders_per_kept"] is None
    assert s["cells"][2]["unet_per_kept"] is None
    assert not s["complete"] and s["kept"] == 100
    # the cost: 21 UNet evaluations and one labeller evaluation per render
    renders = int(r.tally.renders.sum())
    assert s["unet_evaluations"] == 21 * renders and s["labeller_evaluations"] == renders
    assert s["unet_per_kept"] == pytest.approx(21 * renders / 100)
    assert s["labeller_per_kept"] == pytest.approx(renders / 100)
    for c in s["cells"][:2]:
        assert c["unet_per_kept"] == pytest.approx(21 / c["acceptance"])
    assert s["exited"] == 0


def _marks_with_exits(shard, comp):
    """As `_marks`, where a quarter of the renders (by the shard's seed) stop after 2 of the 21
    UNet evaluations with one reading, the others finish with one reading more at their end."""
    m = _marks(shard, comp)
    stopped = np.random.default_rng(shard.seed + 1).random(shard.count) < 0.25
    m[stopped, 1] = 0
    unet = np.where(stopped, 2, 21)
    labeller = np.where(stopped, 1, 2)
    return np.column_stack([m, m[:, 1], unet, labeller])


def test_renders_stopped_early_cost_what_they_ran_and_are_never_kept():
    comp = np.array([[0.5, 0.5, 0.0], [0.2, 0.7, 0.1]])
    t = np.array([30, 30, 10])
    r = _run(comp, t, "adaptive", marks=_marks_with_exits)
    s = quota.summary(r.tally, t, ["a", "b", "c"], unet_per_render=21)
    every = {sh.shard: _marks_with_exits(sh, comp) for sh in r.plan}
    stacked = np.concatenate(list(every.values()))
    assert s["renders"] == len(stacked) and s["exited"] == int((stacked[:, 3] == 2).sum()) > 0
    assert s["unet_evaluations"] == int(stacked[:, 3].sum())
    assert s["labeller_evaluations"] == int(stacked[:, 4].sum())
    assert s["unet_per_kept"] == pytest.approx(stacked[:, 3].sum() / s["kept"])
    mean = stacked[:, 3].mean()
    for c in s["cells"]:
        if c["acceptance"]:
            assert c["unet_per_kept"] == pytest.approx(mean / c["acceptance"])
    for sh in r.plan:  # a stopped render is never kept
        assert not set(r.kept[sh.shard]) & set(np.flatnonzero(every[sh.shard][:, 3] == 2))


def test_adaptive_weights_move_to_the_component_that_makes_the_open_cell():
    comp = np.array([[0.95, 0.05], [0.1, 0.9]])
    tally = quota.Tally.empty(2, 2)
    tally.renders[:] = [1000, 1000]
    tally.hits[:] = (comp * 1000).astype(int)
    w_open_b = quota.proposal_weights("adaptive", tally, np.array([0, 100]))
    w_open_a = quota.proposal_weights("adaptive", tally, np.array([100, 0]))
    assert w_open_b[1] > 0.9 and w_open_a[0] > 0.9
    # equal weights for the mixture proposal whatever it has seen
    np.testing.assert_allclose(quota.proposal_weights("mixture", tally, np.array([0, 100])), [0.5, 0.5])


def test_adaptive_spends_fewer_renders_on_a_rare_cell_than_plain_rejection():
    # components 0-3 make cells 0-3; only component 4 makes cell 4, half the time, so an
    # equal mix makes it about 1 render in 10
    comp = np.full((5, 5), 0.01)
    for k in range(4):
        comp[k, k] = 0.96
    comp[4] = [0.125, 0.125, 0.125, 0.125, 0.5]
    t = np.full(5, 100)
    adaptive = _run(comp, t, "adaptive")
    mixture = _run(comp, t, "mixture")
    assert adaptive.stopped == mixture.stopped == "full"
    assert adaptive.tally.renders.sum() < 0.8 * mixture.tally.renders.sum()


def test_rounds_depend_only_on_the_rounds_before():
    comp = np.array([[0.6, 0.3, 0.1], [0.1, 0.2, 0.7]])
    a, b = _run(comp, [40, 40, 40]), _run(comp, [40, 40, 40])
    assert [s.record() for s in a.plan] == [s.record() for s in b.plan]
    assert {k: v.tolist() for k, v in a.kept.items()} == {k: v.tolist() for k, v in b.kept.items()}
    assert len({s.seed for s in a.plan}) == len(a.plan)


def test_rounds_run_together_and_a_resumed_run_renders_only_what_is_missing():
    """Every set's round goes to one render call; a rerun that finds some shards on disk
    renders the rest and keeps exactly what an uninterrupted run keeps."""

    def marks(r, s):  # a deterministic labeller: each render's cell and confidence by its seed
        rng = np.random.default_rng(s.seed)
        return np.stack([rng.integers(0, 3, s.count), rng.random(s.count) < 0.8], axis=1)

    def runs():
        return [quota.QuotaRun(m, i, "adaptive", [0, 1], quota.targets(3, 30), 400, 8, 5, 6,
                               unet_per_render=21) for i, m in enumerate(("quota_a", "quota_b"))]

    calls, whole = [], runs()
    made = quota.run_rounds(whole, lambda r, shards: shards, calls.append, marks, lambda line: None)
    assert {s.method for s in calls[0]} == {"quota_a", "quota_b"}
    assert made == {r.method: int(r.tally.renders.sum()) for r in whole}
    assert all(r.stopped == "full" and r.tally.kept.sum() == 30 for r in whole)

    # a rerun after a kill: the even shards of every round were written before it
    again = runs()
    resumed = quota.run_rounds(again, lambda r, shards: [s for s in shards if s.shard % 2],
                               lambda todo: None, marks, lambda line: None)
    assert [s.record() for r in again for s in r.plan] == [s.record() for r in whole for s in r.plan]
    for a, b in zip(again, whole):
        assert a.kept.keys() == b.kept.keys()
        assert all(np.array_equal(a.kept[k], b.kept[k]) for k in a.kept)
    assert 0 < sum(resumed.values()) < sum(made.values())
