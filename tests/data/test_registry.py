import pytest

from gammaface.data import registry


def test_classes_as_designed():
    assert {n: a.classes for n, a in registry.ATTRIBUTES.items()} == {
        "age": ("young", "old"), "gender": ("female", "male"),
        "race": ("white", "black", "other"), "smile": ("no", "yes"),
        "glasses": ("no", "yes"), "hair": ("black", "brown", "other")}


@pytest.mark.parametrize("age, expected", [(0, "young"), (39.9, "young"), (40, "old"), (71, "old")])
def test_ffhq_age(age, expected):
    assert registry.ffhq_age(age) == expected


@pytest.mark.parametrize("score, expected", [(0.0, "no"), (0.5, "no"), (0.501, "yes"), (1.0, "yes")])
def test_ffhq_smile(score, expected):
    assert registry.ffhq_smile(score) == expected


@pytest.mark.parametrize("value, expected", [("NoGlasses", "no"), ("ReadingGlasses", "yes"),
                                             ("Sunglasses", "yes"), ("SwimmingGoggles", "yes")])
def test_ffhq_glasses(value, expected):
    assert registry.ffhq_glasses(value) == expected


@pytest.mark.parametrize("colours, bald, expected", [
    ([("black", 0.9), ("brown", 0.5)], 0.1, "black"),
    ([("blond", 0.9), ("gray", 0.2)], 0.1, "brown"),
    ([("brown", 0.99)], 0.0, "brown"),
    ([("red", 0.8), ("black", 0.1)], 0.0, "other"),
    ([("gray", 0.8)], 0.0, "other"),
    ([("other", 0.8)], 0.0, "other"),
    ([], 0.9, "other"),  # bald
    ([], 0.1, None),  # hidden hair
    ([], None, None),
    ([("brown", 0.7), ("blond", 0.7)], 0.0, "brown"),  # tie within one group
    ([("brown", 0.7), ("black", 0.7)], 0.0, None),  # tie across groups
])
def test_ffhq_hair(colours, bald, expected):
    assert registry.ffhq_hair(colours, bald) == expected


def test_ffhq_unknown_values_raise():
    with pytest.raises(registry.BinningError):
        registry.ffhq_glasses("Monocle")
    with pytest.raises(registry.BinningError):
        registry.ffhq_hair([("green", 1.0)], 0.0)


def test_fairface_age_bins():
    young = ["0-2", "3-9", "10-19", "20-29", "30-39", "40-49", "50-59"]
    old = ["60-69", "more than 70", "70+"]
    assert all(registry.FAIRFACE_AGE_VALUES[a] == "young" for a in young)
    assert all(registry.FAIRFACE_AGE_VALUES[a] == "old" for a in old)
