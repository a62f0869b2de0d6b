"""The one place that names attributes, their classes and how raw labels are binned.

Every other module asks this one: nothing else spells a class name. The grouping follows the
paper's section 4.1.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Attribute:
    name: str
    classes: tuple[str, ...]

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    def index(self, value: str) -> int:
        return self.classes.index(value)


AGE = Attribute("age", ("young", "old"))
GENDER = Attribute("gender", ("female", "male"))
RACE = Attribute("race", ("white", "black", "other"))
SMILE = Attribute("smile", ("no", "yes"))
GLASSES = Attribute("glasses", ("no", "yes"))
HAIR = Attribute("hair", ("black", "brown", "other"))

ATTRIBUTES: dict[str, Attribute] = {a.name: a for a in (AGE, GENDER, RACE, SMILE, GLASSES, HAIR)}
ATTRIBUTE_NAMES: tuple[str, ...] = tuple(ATTRIBUTES)
SPLITS: tuple[str, ...] = ("train", "val", "test")
MANIFEST_COLUMNS: tuple[str, ...] = ("path", "split", *ATTRIBUTE_NAMES)

# The attributes each dataset's own files label; every other manifest column of that dataset
# is null on every row. FFHQ's features have no race, FairFace's CSVs only age, gender, race.
DATASET_ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "synthfaces": ATTRIBUTE_NAMES,
    "ffhq": ("age", "gender", "smile", "glasses", "hair"),
    "fairface": ("age", "gender", "race"),
}


def labelled_by(dataset: str) -> tuple[str, ...]:
    """The attributes `dataset` has labels for (registry order)."""
    return DATASET_ATTRIBUTES[dataset]


def get(name: str) -> Attribute:
    try:
        return ATTRIBUTES[name]
    except KeyError:
        raise KeyError(f"unknown attribute {name!r}; known: {', '.join(ATTRIBUTE_NAMES)}") from None


class BinningError(ValueError):
    """A raw label that none of the binning rules accepts."""


# --- FFHQ (ffhq-features-dataset, Azure Face API attributes) -----------------------------------

FFHQ_OLD_FROM_AGE = 40.0  # young < 40 <= old
FFHQ_SMILE_THRESHOLD = 0.5  # smile > 0.5 is "yes"
FFHQ_BALD_THRESHOLD = 0.5
FFHQ_GLASSES_VALUES = {"NoGlasses": "no", "ReadingGlasses": "yes", "Sunglasses": "yes",
                       "SwimmingGoggles": "yes"}
FFHQ_GENDER_VALUES = {"female": "female", "male": "male"}
FFHQ_HAIR_COLOURS = {"black": "black", "brown": "brown", "blond": "brown", "red": "other",
                     "gray": "other", "other": "other"}


def ffhq_age(age: float) -> str:
    return "young" if age < FFHQ_OLD_FROM_AGE else "old"


def ffhq_smile(score: float) -> str:
    return "yes" if score > FFHQ_SMILE_THRESHOLD else "no"


def ffhq_glasses(value: str) -> str:
    try:
        return FFHQ_GLASSES_VALUES[value]
    except KeyError:
        raise BinningError(f"glasses {value!r} is not one of {sorted(FFHQ_GLASSES_VALUES)}") from None


def ffhq_gender(value: str) -> str:
    try:
        return FFHQ_GENDER_VALUES[value]
    except KeyError:
        raise BinningError(f"gender {value!r} is not one of {sorted(FFHQ_GENDER_VALUES)}") from None


def ffhq_hair(colours: list[tuple[str, float]], bald: float | None) -> str | None:
    """Group of the most confident hair colour.

    An empty colour list means bald (group 'other') when the bald score is high and hidden hair
    (unknown) otherwise. A tie at the top between colours of different groups is unknown.
    """
    if not colours:
        return "other" if bald is not None and bald > FFHQ_BALD_THRESHOLD else None
    for colour, _ in colours:
        if colour not in FFHQ_HAIR_COLOURS:
            raise BinningError(f"hair colour {colour!r} is not one of {sorted(FFHQ_HAIR_COLOURS)}")
    top = max(conf for _, conf in colours)
    groups = {FFHQ_HAIR_COLOURS[c] for c, conf in colours if conf == top}
    return groups.pop() if len(groups) == 1 else None


# --- FairFace ------------------------------------------------------------------------------------

FAIRFACE_AGE_VALUES = {"0-2": "young", "3-9": "young", "10-19": "young", "20-29": "young",
                       "30-39": "young", "40-49": "young", "50-59": "young", "60-69": "old",
                       "more than 70": "old", "70+": "old"}
FAIRFACE_GENDER_VALUES = {"Female": "female", "Male": "male"}
FAIRFACE_RACE_VALUES = {"White": "white", "Black": "black", "Indian": "other",
                        "East Asian": "other", "Southeast Asian": "other",
                        "Middle Eastern": "other", "Latino_Hispanic": "other"}
FAIRFACE_COLUMNS = ("file", "age", "gender", "race", "service_test")
FAIRFACE_BINNING = {"age": FAIRFACE_AGE_VALUES, "gender": FAIRFACE_GENDER_VALUES,
                    "race": FAIRFACE_RACE_VALUES}
