"""The demo's speakers: eSpeak NG voice variants, grouped so that held-out voices are really new.

Several bundled variants are near-copies of one another (``klatt`` .. ``klatt6``, ``iven`` ..
``iven4``, ``anika`` and ``anikaRobot``, ...). Splitting by single variant would put a copy of a
test voice in training, so the split unit is the *family* (variant name without its trailing
number, plus a few merges by hand). Families are dealt once, from a fixed seed, into
train/valid/test; every task that promises unseen test voices (``ks``, ``ic``) draws from this
one partition, and the speech pretraining corpus uses only the train and valid families, so the
test voices are new to the encoder as well as to the probe.
"""

from __future__ import annotations

import re
from functools import lru_cache

import numpy as np

from demo.speech import Voice
from demo.texts import words

# Every variant in espeakng-loader 0.2.4's espeak-ng-data/voices/!v, except "fast" (a speed
# preset, not a voice) and "Demonic"/"UniRobot" (effects rather than speakers).
VARIANTS: tuple[str, ...] = words(
    "Alex|Alicia|Andrea|Andy|Annie|AnxiousAndy|Denis|Diogo|Gene|Gene2|Henrique|Hugo|Jacky|"
    "Lee|Marco|Mario|Michael|Mike|Mr serious|Nguyen|Reed|RicishayMax|RicishayMax2|"
    "RicishayMax3|Storm|Tweaky|adam|anika|anikaRobot|announcer|antonio|aunty|belinda|"
    "benjamin|boris|caleb|croak|david|ed|edward|edward2|f1|f2|f3|f4|f5|grandma|grandpa|"
    "gustave|ian|iven|iven2|iven3|iven4|john|kaukovalta|klatt|klatt2|klatt3|klatt4|klatt5|"
    "klatt6|linda|m1|m2|m3|m4|m5|m6|m7|m8|marcelo|max|michel|miguel|mike2|norbert|pablo|"
    "paul|pedro|quincy|rob|robert|robosoft|robosoft2|robosoft3|robosoft4|robosoft5|"
    "robosoft6|robosoft7|robosoft8|sandro|shelby|steph|steph2|steph3|travis|victor|whisper|"
    "whisperf|zac",
    "|",
)
_MERGE = {"anikarobot": "anika", "anxiousandy": "andy", "whisperf": "whisper", "mike2": "mike"}

# English accents first; other languages read the English text with their own letter-to-sound
# rules, which gives strongly accented but still word-like speech.
ENGLISH = words("en en-us en-gb-scotland en-gb-x-rp en-029 en-us-nyc en-gb-x-gbclan en-gb-x-gbcwmd")
OTHER = words("de nl sv da af fr es it pt ro pl cs fi id")

PARTITION_SEED = 71
N_TEST_FAMILIES, N_VALID_FAMILIES = 14, 7


def family(variant: str) -> str:
    """The split unit: near-identical variants share one family."""
    key = re.sub(r"\d+$", "", variant).lower().replace(" ", "")
    return _MERGE.get(key, key)


@lru_cache(maxsize=1)
def partition() -> dict[str, tuple[str, ...]]:
    """Variants per split (train/valid/test), whole families at a time, from a fixed seed."""
    families = sorted({family(v) for v in VARIANTS})
    order = np.random.default_rng(PARTITION_SEED).permutation(len(families))
    test = {families[i] for i in order[:N_TEST_FAMILIES]}
    valid = {families[i] for i in order[N_TEST_FAMILIES : N_TEST_FAMILIES + N_VALID_FAMILIES]}
    split_of = {f: "test" if f in test else "valid" if f in valid else "train" for f in families}
    return {
        s: tuple(v for v in VARIANTS if split_of[family(v)] == s)
        for s in ("train", "valid", "test")
    }


def random_voice(
    rng: np.random.Generator,
    variants: tuple[str, ...],
    other_languages: float = 0.2,
    rate: tuple[int, int] = (130, 240),
    pitch: tuple[int, int] = (25, 75),
    range_: tuple[int, int] = (20, 90),
) -> tuple[Voice, str]:
    """A voice from ``variants`` (family first, so big families do not dominate), random accent
    and prosody; returns (voice, variant)."""
    families = sorted({family(v) for v in variants})
    chosen = families[int(rng.integers(len(families)))]
    members = [v for v in variants if family(v) == chosen]
    variant = members[int(rng.integers(len(members)))]
    langs = OTHER if rng.random() < other_languages else ENGLISH
    lang = langs[int(rng.integers(len(langs)))]
    voice = Voice(
        f"{lang}+{variant}",
        rate=int(rng.integers(rate[0], rate[1] + 1)),
        pitch=int(rng.integers(pitch[0], pitch[1] + 1)),
        range=int(rng.integers(range_[0], range_[1] + 1)),
    )
    return voice, variant


def speakers(
    n: int, seed: int, variants: tuple[str, ...] = VARIANTS, per_family: int = 1
) -> list[Voice]:
    """``n`` fixed speaker identities, each with its own accent, base pitch, rate and range.

    ``per_family`` speakers share one variant family (so the same formant "vocal tract") and
    differ only in accent and prosody, ``pitch`` 10-20 units (2-4 semitones) or more apart:
    with one per family every speaker's timbre is unique and identification is too easy.
    """
    rng = np.random.default_rng(seed)
    by_family: dict[str, str] = {}
    for v in (variants[i] for i in rng.permutation(len(variants))):
        by_family.setdefault(family(v), v)
    chosen = list(by_family.values())
    need = -(-n // per_family)
    if len(chosen) < need:
        raise ValueError(f"only {len(chosen)} voice families for {n} speakers")
    out = []
    for variant in chosen[:need]:
        pool = ENGLISH + OTHER  # distinct accents within a family, English ones more often
        weights = np.r_[
            np.full(len(ENGLISH), 0.7 / len(ENGLISH)), np.full(len(OTHER), 0.3 / len(OTHER))
        ]
        langs = rng.choice(len(pool), per_family, replace=False, p=weights)
        spacing = min(20, 60 // per_family)
        low = int(rng.integers(20, 81 - spacing * per_family))
        for k in range(per_family):
            lang = pool[langs[k]]
            out.append(
                Voice(
                    f"{lang}+{variant}",
                    rate=int(rng.integers(140, 221)),
                    pitch=low + spacing * k + int(rng.integers(0, spacing // 2)),
                    range=int(rng.integers(25, 86)),
                )
            )
    return out[:n]
