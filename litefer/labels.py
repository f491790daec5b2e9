"""The canonical expression label space and every dataset's mapping onto it.

litefer names expressions with one vocabulary, :data:`CANONICAL`.  A *label set*
is an ordered tuple of canonical names: position ``i`` is class index ``i`` of a
dataset or a model head.  Each dataset reader declares its native label set
here, so mapping a label from one dataset to another is a lookup by name, never
by position (FER2013's folder names sort differently from its CSV indices).
"""
from __future__ import annotations

from typing import Iterable, Sequence

#: Every expression litefer knows, in the FER+ order.
CANONICAL: tuple[str, ...] = (
    "neutral", "happy", "surprise", "sad", "angry", "disgust", "fear", "contempt",
)

#: Spellings used by the datasets' files, mapped to canonical names.
ALIASES: dict[str, str] = {
    "neutral": "neutral", "neutrality": "neutral",
    "happy": "happy", "happiness": "happy", "joy": "happy",
    "surprise": "surprise", "surprised": "surprise",
    "sad": "sad", "sadness": "sad",
    "angry": "angry", "anger": "angry",
    "disgust": "disgust", "disgusted": "disgust",
    "fear": "fear", "fearful": "fear", "afraid": "fear",
    "contempt": "contempt",
}

#: FER2013 csv indices 0..6 (also its image-folder names).
FER2013: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
#: FER+ vote columns (the 8 emotions, before unknown/NF).
FERPLUS8: tuple[str, ...] = ("neutral", "happy", "surprise", "sad", "angry", "disgust", "fear", "contempt")
FERPLUS7: tuple[str, ...] = FERPLUS8[:7]
#: RAF-DB basic labels 1..7.
RAFDB: tuple[str, ...] = ("surprise", "fear", "disgust", "happy", "sad", "angry", "neutral")
#: AffectNet expression 0..7 (8 = none, 9 = uncertain, 10 = non-face).
AFFECTNET8: tuple[str, ...] = ("neutral", "happy", "sad", "surprise", "fear", "disgust", "angry", "contempt")
AFFECTNET7: tuple[str, ...] = AFFECTNET8[:7]
#: CK+ emotion codes 1..7 (0 = neutral).
CKPLUS: tuple[str, ...] = ("neutral", "angry", "contempt", "disgust", "fear", "happy", "sad", "surprise")

LABEL_SETS: dict[str, tuple[str, ...]] = {
    "fer2013": FER2013, "ferplus8": FERPLUS8, "ferplus7": FERPLUS7, "rafdb": RAFDB,
    "affectnet8": AFFECTNET8, "affectnet7": AFFECTNET7, "ckplus": CKPLUS,
}


class UnknownLabelError(ValueError):
    """A label name that is not an expression litefer knows."""


def canonical(name: str) -> str:
    """Canonical name of ``name`` (case-insensitive, dataset spellings accepted)."""
    key = str(name).strip().lower()
    try:
        return ALIASES[key]
    except KeyError:
        raise UnknownLabelError(
            f"unknown expression label {name!r}; known: {', '.join(sorted(ALIASES))}"
        ) from None


def label_set(spec: str | Sequence[str]) -> tuple[str, ...]:
    """A label set from a registered name (``"fer2013"``) or a sequence of names."""
    if isinstance(spec, str):
        if spec in LABEL_SETS:
            return LABEL_SETS[spec]
        raise UnknownLabelError(f"unknown label set {spec!r}; known: {', '.join(LABEL_SETS)}")
    names = tuple(canonical(n) for n in spec)
    if len(set(names)) != len(names):
        raise UnknownLabelError(f"label set has repeated labels: {list(spec)}")
    return names


def remap(indices: Iterable[int], src: Sequence[str], dst: Sequence[str]) -> list[int]:
    """Map class indices from label set ``src`` to ``dst`` by name (-1 where ``dst`` lacks it)."""
    pos = {n: i for i, n in enumerate(dst)}
    return [pos.get(src[i], -1) for i in indices]
