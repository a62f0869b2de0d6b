"""Resume keys hold exactly what determines a unit's output: a change elsewhere redoes nothing."""

import pytest

from gammaface import config
from gammaface.commands import pipeline
from gammaface.downstream import mixing
from gammaface.downstream.mixing import Job
from gammaface.generate import methods
from gammaface.stages import makers


def method_key(cfg, method):
    return methods.method_key(cfg, method, lambda what: pipeline.stage_hash(makers()[what], cfg))


def job_key(cfg, job):
    return mixing.job_key(cfg, job, lambda what: pipeline.stage_hash(makers()[what], cfg))


def _cfg(**sections):
    return config.from_dict({"generate": {"methods": ["gmm", "gmm_tempered", "gmm_attr",
                                                      "unconditional", "stratified"]},
                             "downstream": {"methods": ["baseline"]}, **sections})


@pytest.mark.parametrize("change, unchanged, changed", [
    ({"generate": {"grid": 5}}, {"gmm", "gmm_attr", "gmm_tempered", "unconditional", "stratified"}, set()),
    ({"generate": {"alpha": 0.3}}, {"gmm", "gmm_attr", "unconditional", "stratified"}, {"gmm_tempered"}),
    ({"generate": {"pilot": 99}}, {"gmm", "gmm_attr", "gmm_tempered", "unconditional", "stratified"}, set()),
    ({"generate": {"protected": ["age"]}}, {"gmm", "gmm_tempered", "unconditional"}, {"gmm_attr", "stratified"}),
    ({"harvest": {"t_star": 300}}, {"unconditional"}, {"gmm", "gmm_attr", "gmm_tempered", "stratified"}),
    ({"generate": {"n": 77}}, set(), {"gmm", "gmm_attr", "gmm_tempered", "unconditional", "stratified"}),
])
def test_a_method_key_follows_only_what_changes_its_images(change, unchanged, changed):
    base, other = _cfg(), _cfg(**change)
    for method in unchanged:
        assert method_key(base, method) == method_key(other, method), method
    for method in changed:
        assert method_key(base, method) != method_key(other, method), method


def test_a_quota_set_sized_apart_is_keyed_on_its_own_size_alone():
    methods = {"methods": ["gmm", "quota_adaptive", "quota_unconditional"]}
    base = _cfg(generate=methods)
    apart = _cfg(generate={**methods, "quota": {"n": 240}})
    for quota in ("quota_adaptive", "quota_unconditional"):
        assert method_key(base, quota) != method_key(apart, quota), quota
        # once apart, generate.n no longer sizes it; equal to generate.n, it is still apart
        assert method_key(apart, quota) == method_key(_cfg(generate={
            **methods, "n": 77, "quota": {"n": 240}}), quota), quota
    assert method_key(base, "gmm") == method_key(apart, "gmm")
    assert config.quota_n(base) == base.generate.n and config.quota_n(apart) == 240


def test_gmm_attr_on_reverse_latents_is_keyed_on_the_labeller_and_its_pilot():
    rev = {"harvest": {"source": "reverse"}}
    base = _cfg(**rev)
    assert method_key(base, "gmm_attr") != method_key(_cfg(**rev, generate={
        "methods": ["gmm_attr"], "pilot": 99}), "gmm_attr")
    assert method_key(base, "gmm_attr") != method_key(_cfg(**rev, classifiers={"epochs": 3}),
                                                      "gmm_attr")
    # and the pipeline makes the generate stage wait for (and hash) the labeller
    assert "train_classifiers" in pipeline.BY_NAME["generate"].needs(base)
    assert "train_classifiers" in pipeline.BY_NAME["generate"].needs(_cfg(**rev, generate={"methods": ["gmm"]}))
    assert "train_classifiers" not in pipeline.BY_NAME["generate"].needs(_cfg())


def test_a_downstream_job_is_keyed_on_its_own_data_not_on_the_other_jobs():
    base = config.from_dict({"downstream": {"methods": ["baseline", "gmm"], "seeds": 1}})
    job = Job(n_per_class=5000, method="gmm", ratio=0.5, seed=0)
    baseline = Job(n_per_class=5000, method="baseline", ratio=0.0, seed=0)
    # more seeds, more ratios, another method: the existing jobs keep their keys
    for change in ({"seeds": 3}, {"ratios": [0.5, 0.9]}, {"methods": ["baseline", "gmm", "unconditional"]}):
        other = config.from_dict({"downstream": {"methods": ["baseline", "gmm"], "seeds": 1, **change},
                                  "generate": {"methods": ["gmm", "unconditional"]}})
        assert job_key(base, job) == job_key(other, job), change
        assert job_key(base, baseline) == job_key(other, baseline), change
    # what the job trains on or how: its key changes
    for change in ({"downstream": {"epochs": 7}}, {"generate": {"n": 123}},
                   {"label": {"min_confidence": 0.8}}):
        other = config.from_dict({**change, "downstream": {"methods": ["baseline", "gmm"], "seeds": 1,
                                                           **change.get("downstream", {})}})
        assert job_key(base, job) != job_key(other, job), change
    # the baseline reads no generated set
    assert job_key(base, baseline) == job_key(config.from_dict({
        "generate": {"n": 123}, "downstream": {"methods": ["baseline", "gmm"], "seeds": 1}}), baseline)


def _quota(**sections):
    g = {"methods": ["gmm", "quota_adaptive", "quota_unconditional"], **sections.pop("generate", {})}
    return config.from_dict({"generate": g, "downstream": {"methods": ["baseline"]}, **sections})


@pytest.mark.parametrize("change, unchanged, changed", [
    ({"generate": {"quota": {"budget": 7}}}, {"gmm", "quota_adaptive", "quota_unconditional"}, set()),
    ({"generate": {"quota": {"shares": {"young:female:white": 2, "old:male:black": 1}}}}, {"gmm"},
     {"quota_adaptive", "quota_unconditional"}),
    ({"label": {"min_confidence": 0.8}}, {"gmm"}, {"quota_adaptive", "quota_unconditional"}),
    ({"classifiers": {"epochs": 3}}, {"gmm"}, {"quota_adaptive", "quota_unconditional"}),
    ({"harvest": {"t_star": 300}}, {"quota_unconditional"}, {"gmm", "quota_adaptive"}),
    ({"generate": {"draw": "resample"}}, {"quota_unconditional"}, {"gmm", "quota_adaptive"}),
    ({"generate": {"quota": {"draw": "resample"}}}, {"gmm", "quota_unconditional"},
     {"quota_adaptive"}),
    ({"judge": {"n": 999}}, {"gmm", "quota_adaptive", "quota_unconditional"}, set()),
    ({"generate": {"quota": {"min_confidence": 0.9}}}, {"gmm"},
     {"quota_adaptive", "quota_unconditional"}),
    ({"generate": {"quota": {"draw": "resample", "t_start": 400}}},
     {"gmm", "quota_unconditional"}, {"quota_adaptive"}),
])
def test_a_quota_set_is_keyed_on_its_labeller_its_cells_and_its_proposal(change, unchanged, changed):
    base, other = _quota(), _quota(**change)
    for method in unchanged:
        assert method_key(base, method) == method_key(other, method), method
    for method in changed:
        assert method_key(base, method) != method_key(other, method), method
    assert "train_classifiers" in pipeline.BY_NAME["generate"].needs(base)
    # the judge reruns the audit, never the generation
    judged = _quota(judge={"seed": 8})
    assert pipeline.stage_hash("generate", base) == pipeline.stage_hash("generate", judged)
    assert pipeline.stage_hash("audit", base) != pipeline.stage_hash("audit", judged)


def test_a_quota_draw_of_its_own_frees_the_set_from_the_mixture_methods_draw():
    own = {"quota": {"draw": "gaussian"}}
    a, b = _quota(generate=own), _quota(generate={**own, "draw": "resample"})
    assert method_key(a, "quota_adaptive") == method_key(b, "quota_adaptive")
    assert method_key(a, "gmm") != method_key(b, "gmm")


def test_a_quota_start_level_keys_only_the_resampled_quota_sets():
    own = {"quota": {"draw": "resample"}}
    a, b = _quota(generate=own), _quota(generate={"quota": {"draw": "resample", "t_start": 400}})
    assert method_key(a, "quota_adaptive") != method_key(b, "quota_adaptive")
    assert method_key(a, "quota_unconditional") == method_key(b, "quota_unconditional")
    assert method_key(a, "gmm") == method_key(b, "gmm")


def test_a_quota_confidence_of_its_own_frees_the_set_from_the_downstream_filter():
    own = {"quota": {"min_confidence": 0.9}}
    a, b = _quota(generate=own), _quota(generate=own, label={"min_confidence": 0.5})
    assert method_key(a, "quota_adaptive") == method_key(b, "quota_adaptive")
    assert pipeline.stage_hash("generate", a) == pipeline.stage_hash("generate", b)
