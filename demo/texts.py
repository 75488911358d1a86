"""What the demo's voices say: keywords, spoken commands, sentences and pseudo-words.

Sentences come from small templates over a fixed vocabulary, so every one is new yet sounds like
language; the probe tasks and the pretraining corpus draw them from different random streams.
"""

from __future__ import annotations

import numpy as np


def words(text: str, sep: str | None = None) -> tuple[str, ...]:
    """A word list written as one string (``sep`` for entries that contain spaces)."""
    return tuple(text.split(sep))


# Speech Commands v0.01's ten commands, the words SUPERB's keyword task folds into "_unknown_",
# and "_silence_" (background noise alone), i.e. SUPERB's 12 classes.
KEYWORDS = words("yes no up down left right on off stop go")
UNKNOWN_WORDS = words(
    "bed bird cat dog happy house marvin sheila tree wow zero one two three four five six seven "
    "eight nine"
)
UNKNOWN, SILENCE = "_unknown_", "_silence_"

_DET = words("the a my your this that every one our his her")
_ADJ = words(
    "old small green quiet bright heavy cold warm little broken happy strange yellow wooden "
    "tired clever early empty gentle hidden lucky narrow rusty silver sudden tall wild young"
)
_NOUN = words(
    "river window garden teacher market letter engine island doctor basket kitchen mountain "
    "paper village bottle candle farmer forest pocket rabbit station ticket winter bridge "
    "captain castle driver picture sailor shadow table wagon morning letterbox painter orange "
    "hammer jacket ladder museum"
)
_VERB = words(
    "found carried painted opened watched followed cleaned dropped moved covered pushed visited "
    "wanted remembered borrowed noticed fixed lifted sold counted washed answered ordered "
    "closed"
)
_ADV = words(
    "slowly|quietly|again|today|yesterday|later|carefully|suddenly|soon|twice|early|outside|"
    "at night|in the rain|after lunch",
    "|",
)
_PREP = words("near behind under beside across inside above past")
_SUBJ = words(
    "she|he|they|we|the boy|the girl|my brother|our neighbour|the old man|a tourist|"
    "the children|my friend",
    "|",
)


def _pick(rng: np.random.Generator, items: tuple[str, ...]) -> str:
    return items[int(rng.integers(len(items)))]


def sentence(rng: np.random.Generator) -> str:
    """A short grammatical sentence (4-9 words) from one of a few templates."""
    subj = _pick(rng, _SUBJ) if rng.random() < 0.5 else f"{_pick(rng, _DET)} {_pick(rng, _NOUN)}"
    obj = f"{_pick(rng, _DET)} {_pick(rng, _ADJ)} {_pick(rng, _NOUN)}"
    kind = int(rng.integers(4))
    if kind == 0:
        return f"{subj} {_pick(rng, _VERB)} {obj}"
    if kind == 1:
        return f"{subj} {_pick(rng, _VERB)} {obj} {_pick(rng, _ADV)}"
    if kind == 2:
        return f"{obj} is {_pick(rng, _PREP)} the {_pick(rng, _NOUN)}"
    return f"{subj} {_pick(rng, _VERB)} it {_pick(rng, _PREP)} the {_pick(rng, _NOUN)}"


def word_sequence(rng: np.random.Generator, n: int) -> str:
    """``n`` words at random from the whole vocabulary: speech with no sentence structure."""
    pool = _DET + _ADJ + _NOUN + _VERB + _ADV + _PREP + KEYWORDS + UNKNOWN_WORDS
    return " ".join(_pick(rng, pool) for _ in range(n))


_ONSETS = words("b d f g k l m n p r s t v z br kl st tr pl gr sh ch")
_VOWELS = words("a e i o u ai ou ei au")
_CODAS = ("", "", "", "n", "s", "r", "l", "m", "t", "k")


def pseudo_words(rng: np.random.Generator, n: int) -> str:
    """Pronounceable nonsense for voices of other languages (their own letter-to-sound rules)."""
    words = []
    for _ in range(n):
        syllables = int(rng.integers(1, 4))
        words.append(
            "".join(
                _pick(rng, _ONSETS) + _pick(rng, _VOWELS) + _pick(rng, _CODAS)
                for _ in range(syllables)
            )
        )
    return " ".join(words)


# Spoken commands in the manner of Fluent Speech Commands: the label is action|object|location.
_LOCATIONS = ("none", "kitchen", "bedroom", "washroom")
_ROOM_PHRASES = {
    "activate|lights": (
        "turn on the lights{in}",
        "switch on the lights{in}",
        "lights on{in}",
        "switch the lights on{in}",
        "turn the {room}lights on",
    ),
    "deactivate|lights": (
        "turn off the lights{in}",
        "switch off the lights{in}",
        "lights off{in}",
        "switch the lights off{in}",
        "turn the {room}lights off",
    ),
    "increase|heat": (
        "turn up the heat{in}",
        "increase the temperature{in}",
        "make it warmer{in}",
        "warm up the {place}",
        "turn the {room}heat up",
    ),
    "decrease|heat": (
        "turn down the heat{in}",
        "decrease the temperature{in}",
        "make it cooler{in}",
        "cool down the {place}",
        "turn the {room}heat down",
    ),
}
_PLAIN_PHRASES = {
    "increase|volume": (
        "turn up the volume",
        "increase the volume",
        "make it louder",
        "louder please",
        "volume up",
    ),
    "decrease|volume": (
        "turn down the volume",
        "decrease the volume",
        "make it quieter",
        "too loud",
        "volume down",
    ),
    "activate|music": (
        "play some music",
        "start the music",
        "turn on the music",
        "music on",
        "put some music on",
    ),
    "deactivate|music": (
        "stop the music",
        "pause the music",
        "turn off the music",
        "music off",
        "no more music",
    ),
    "activate|lamp": ("turn on the lamp", "switch on the lamp", "lamp on", "switch the lamp on"),
    "deactivate|lamp": (
        "turn off the lamp",
        "switch off the lamp",
        "lamp off",
        "switch the lamp off",
    ),
    "bring|newspaper": (
        "bring me the newspaper",
        "get me the newspaper",
        "fetch the newspaper",
        "i need the newspaper",
    ),
    "bring|juice": (
        "bring me some juice",
        "get me a juice",
        "fetch me some juice",
        "i would like some juice",
    ),
    "bring|shoes": ("bring me my shoes", "get my shoes", "fetch my shoes", "i need my shoes"),
    "bring|socks": ("bring me my socks", "get my socks", "fetch my socks", "i need my socks"),
}
_PREFIXES = ("", "", "please ", "could you ", "hey ")
_SUFFIXES = ("", "", " please", " now")


def intents() -> tuple[str, ...]:
    """All intent labels, ``action|object|location`` (26 of them)."""
    rooms = tuple(f"{k}|{loc}" for k in _ROOM_PHRASES for loc in _LOCATIONS)
    return rooms + tuple(f"{k}|none" for k in _PLAIN_PHRASES)


def command(rng: np.random.Generator, intent: str) -> str:
    """One phrasing of ``intent``: a template, a room wording, a polite prefix or suffix."""
    action, obj, loc = intent.split("|")
    key = f"{action}|{obj}"
    if key in _ROOM_PHRASES:
        templates = _ROOM_PHRASES[key]
        if loc == "none":  # templates that name a room need one; drop them
            templates = tuple(t for t in templates if "{room}" not in t and "{place}" not in t)
        text = _pick(rng, templates).format(
            **{
                "in": "" if loc == "none" else f" in the {loc}",
                "room": "" if loc == "none" else f"{loc} ",
                "place": loc,
            }
        )
    else:
        text = _pick(rng, _PLAIN_PHRASES[key])
    prefix, suffix = _pick(rng, _PREFIXES), _pick(rng, _SUFFIXES)
    if "please" in prefix and "please" in suffix:
        suffix = ""
    return f"{prefix}{text}{suffix}"
