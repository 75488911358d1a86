"""Recipes for every clip of the demo suite: what is drawn at random, and how it is rendered.

Planning and rendering are separate on purpose. A plan draws all of a clip's random choices
from a generator seeded by ``(SEED, stream, index)`` and returns a ``Job`` whose ``make`` is a
picklable call with plain arguments; rendering is then a pure function of those arguments.
So a clip does not depend on the order clips are made in, on how many other clips there are
(``scale``), or on which process makes it.

Streams are disjoint: each task, the calibration set and each pretraining corpus draw from
their own stream id, so no two parts of the suite share a random choice (text, voice draw,
melody or noise), and the pretraining corpora exclude the voices and programs held out for
testing (``demo.voices.partition``, ``program_partition``).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache, partial

import numpy as np

from demo import genres, music, sounds, texts, voices
from demo.music import GM_FAMILIES, Note
from demo.speech import RATE, Voice, synthesize

SEED = 20240917


@dataclass(frozen=True)
class Job:
    """One clip to make: where it goes (relative to the suite root), its label and split."""

    path: str
    label: str
    split: str
    group: str  # what the split was made by: voice family, program, speaker, fold ...
    make: Callable[[], np.ndarray]


def stream(name: str) -> int:
    return zlib.crc32(name.encode())


def clip_rng(name: str, index: int) -> np.random.Generator:
    return np.random.default_rng([SEED, stream(name), index])


def count(n: int, scale: float) -> int:
    """A scaled clip count that never drops to zero (every class keeps every split)."""
    return max(1, int(round(n * scale)))


# ---------------------------------------------------------------------------------- finishing
def trim(wave: np.ndarray, threshold: float = 0.01, margin: float = 0.03) -> np.ndarray:
    """Cut leading and trailing near-silence, keeping ``margin`` seconds either side."""
    loud = np.flatnonzero(np.abs(wave) > threshold * (np.abs(wave).max() + 1e-12))
    if loud.size == 0:
        return wave
    pad = int(margin * RATE)
    return wave[max(0, loud[0] - pad) : loud[-1] + pad + 1]


def fit(wave: np.ndarray, seconds: float, offset: int = 0) -> np.ndarray:
    """Exactly ``seconds`` long: ``wave`` placed at ``offset`` samples, cropped or zero-padded."""
    n = int(round(seconds * RATE))
    out = np.zeros(n, np.float32)
    part = wave[: max(0, n - offset)]
    out[offset : offset + len(part)] = part
    return out


def level(wave: np.ndarray, rms_db: float) -> np.ndarray:
    """Scale to an RMS of ``rms_db`` dBFS, then keep the peak below full scale."""
    rms = float(np.sqrt(np.mean(wave.astype(np.float64) ** 2))) if wave.size else 0.0
    if rms == 0.0:
        return wave.astype(np.float32)
    out = wave * (10 ** (rms_db / 20) / rms)
    peak = float(np.abs(out).max())
    if peak > 0.99:
        out *= 0.99 / peak
    return out.astype(np.float32)


def _room(wave: np.ndarray, room: int | None) -> np.ndarray:
    """Through a random recording chain (``sounds.channel``) when ``room`` seeds one."""
    return wave if room is None else sounds.channel(np.random.default_rng(room), wave, RATE)


def _noisy(wave: np.ndarray, seed: int, snr_db: float | None) -> np.ndarray:
    if snr_db is None:
        return wave
    rng = np.random.default_rng(seed)
    return sounds.mix_at_snr(wave, sounds.background(rng, len(wave), RATE), snr_db)


# ------------------------------------------------------------------------------ speech renders
def speak(
    text: str,
    voice: Voice,
    seconds: float | None,
    rms_db: float,
    seed: int,
    snr_db: float | None,
    offset: float = 0.0,
    room: int | None = None,
) -> np.ndarray:
    """Synthesise, trim, place at ``offset`` (fraction of the free space), add noise, level."""
    wave = trim(synthesize(text, voice))
    if seconds is not None:
        free = max(0, int(seconds * RATE) - len(wave))
        wave = fit(wave, seconds, int(offset * free))
    return level(_room(_noisy(wave, seed, snr_db), room), rms_db)


def noise_only(seconds: float, rms_db: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return level(sounds.background(rng, int(seconds * RATE), RATE), rms_db)


def sing(
    notes: tuple[tuple[int, str], ...],
    voice: Voice,
    rms_db: float,
    seed: int,
    snr_db: float | None,
    seconds: float,
    room: int | None = None,
) -> np.ndarray:
    """Sustained syllables, each at its own eSpeak pitch (embedded ``P`` command), monotone."""
    text = " ".join(f"\x01{p}P {syllable}" for p, syllable in notes)
    wave = trim(synthesize(text, voice))[: int(seconds * RATE)]
    return level(_room(_noisy(wave, seed, snr_db), room), rms_db)


# ------------------------------------------------------------------------------- music renders
def play(
    notes: tuple[Note, ...],
    programs: tuple[tuple[int, int], ...],
    seconds: float,
    rms_db: float,
    volumes: tuple[tuple[int, float], ...] = (),
    skip: float = 0.0,
    room: int | None = None,
) -> np.ndarray:
    """Render notes with tinysoundfont; drop the first ``skip`` seconds; set the level."""
    wave = music.render(notes, dict(programs), seconds + skip, volumes=dict(volumes))
    wave = wave[int(round(skip * RATE)) :]
    if float(np.sqrt(np.mean(wave**2))) < 1e-4:
        raise RuntimeError(f"silent render: programs {programs}, keys {[n.key for n in notes]}")
    return level(_room(wave, room), rms_db)


def environmental(
    name: str,
    seconds: float,
    seed: int,
    rms_db: float,
    bed_db: float,
    room: int | None = None,
    other: str | None = None,
) -> np.ndarray:
    """One class's sound over a background ``bed_db`` below it: pink noise or ``other`` class."""
    rng = np.random.default_rng(seed)
    n = int(seconds * RATE)
    wave = sounds.CLASSES[name](rng, n, RATE)
    bed = sounds.CLASSES[other](rng, n, RATE) if other else sounds.colored_noise(rng, n, 1.0)
    ratio = np.sqrt(np.mean(wave**2) / (np.mean(bed**2) + 1e-12))
    return level(_room(wave + bed * ratio * 10 ** (bed_db / 20), room), rms_db)


# ----------------------------------------------------------------------- program partitions
PITCHED_FAMILIES = (
    "piano",
    "chromatic_percussion",
    "organ",
    "guitar",
    "bass",
    "strings",
    "ensemble",
    "brass",
    "reed",
    "pipe",
    "synth_lead",
    "synth_pad",
    "ethnic",
)
INSTRUMENT_FAMILIES = PITCHED_FAMILIES[:11]  # NSynth-like: no pads, no ethnic
# Not usable as pitch references: an orchestra hit, an inharmonic glockenspiel sample, a
# detuned shakuhachi, a whistle sampled far off its key, a saw wave doubled at the fifth.
UNPITCHED = frozenset({9, 55, 77, 78, 86})
PARTITION_SEED = 5


@lru_cache(maxsize=1)
def program_partition() -> dict[str, dict[str, tuple[int, ...]]]:
    """Per pitched GM family: programs for train (5), valid (1) and test (2), fixed seed.

    One partition serves ``instcls`` and ``pitchid`` (test programs unseen by either probe)
    and the music pretraining corpus (which uses only train and valid programs).
    """
    rng = np.random.default_rng(PARTITION_SEED)
    out = {}
    for fam in PITCHED_FAMILIES:
        progs = [GM_FAMILIES[fam][i] for i in rng.permutation(8)]
        progs = [p for p in progs if p != 55]
        out[fam] = {
            "test": tuple(sorted(progs[:2])),
            "valid": (progs[2],),
            "train": tuple(sorted(progs[3:])),
        }
    return out


def held_out_programs() -> frozenset[int]:
    return frozenset(p for fam in program_partition().values() for p in fam["test"])


def _pick(rng: np.random.Generator, items):  # noqa: ANN001, ANN202
    return items[int(rng.integers(len(items)))]


# ---------------------------------------------------------------------------------- the tasks
SPLITS = ("train", "valid", "test")
FOLDS = tuple(f"fold{k}" for k in range(1, 6))


def _per_split(labels, per_class: dict[str, int], scale: float):  # noqa: ANN001, ANN202
    """(index, label, split) for every clip: each class gets its count in every split."""
    i = 0
    for split, n in per_class.items():
        for _ in range(count(n, scale)):
            for label in labels:
                yield i, label, split
                i += 1


def plan_ks(scale: float) -> list[Job]:
    """Keyword spotting, SUPERB's 12 classes; split by voice family (test voices unseen)."""
    labels = (*texts.KEYWORDS, texts.UNKNOWN, texts.SILENCE)
    part = voices.partition()
    jobs = []
    for i, label, split in _per_split(labels, {"train": 30, "valid": 5, "test": 10}, scale):
        rng = clip_rng("ks", i)
        voice, variant = voices.random_voice(rng, part[split])
        rms_db, seed = float(rng.uniform(-30, -18)), int(rng.integers(2**31))
        if label == texts.SILENCE:
            make = partial(noise_only, seconds=1.0, rms_db=float(rng.uniform(-50, -25)), seed=seed)
            group = "noise"
        else:
            word = _pick(rng, texts.UNKNOWN_WORDS) if label == texts.UNKNOWN else label
            make = partial(
                speak,
                text=word,
                voice=voice,
                seconds=1.0,
                rms_db=rms_db,
                seed=seed,
                snr_db=float(rng.uniform(5, 30)),
                offset=float(rng.uniform()),
                room=int(rng.integers(2**31)),
            )
            group = voices.family(variant)
        jobs.append(Job(f"ks/{split}/{i:05d}.wav", label, split, group, make))
    return jobs


IC_SECONDS = 4.0


def plan_ic(scale: float) -> list[Job]:
    """Spoken commands (action|object|location), many phrasings; split by voice family."""
    part = voices.partition()
    jobs = []
    for i, label, split in _per_split(texts.intents(), {"train": 10, "valid": 2, "test": 4}, scale):
        rng = clip_rng("ic", i)
        voice, variant = voices.random_voice(rng, part[split], rate=(150, 240))
        make = partial(
            speak,
            text=texts.command(rng, label),
            voice=voice,
            seconds=None,
            rms_db=float(rng.uniform(-30, -18)),
            seed=int(rng.integers(2**31)),
            snr_db=float(rng.uniform(15, 40)),
            room=int(rng.integers(2**31)),
        )
        make = partial(_crop, make, IC_SECONDS)  # a safety net: commands last 1-3 s
        jobs.append(Job(f"ic/{split}/{i:05d}.wav", label, split, voices.family(variant), make))
    return jobs


SID_SPEAKERS, ER_VOICES, SINGERS = 24, 20, 16


def plan_sid(scale: float) -> list[Job]:
    """Closed-set speaker identification: fixed speakers, different sentences per split.

    Speakers come in fours that share a voice family (differing in accent and prosody), and
    every clip has its own prosody jitter, noise and recording chain, so identity is not a
    lookup of one clean timbre.
    """
    speakers = voices.speakers(SID_SPEAKERS, seed=stream("sid-speakers"), per_family=4)
    labels = tuple(f"spk{k:02d}" for k in range(len(speakers)))
    jobs = []
    for i, label, split in _per_split(labels, {"train": 12, "valid": 2, "test": 4}, scale):
        rng = clip_rng("sid", i)
        base = speakers[labels.index(label)]
        voice = Voice(
            base.name,
            rate=int(base.rate * rng.uniform(0.88, 1.12)),
            pitch=int(np.clip(base.pitch + rng.integers(-5, 6), 0, 99)),
            range=int(np.clip(base.range + rng.integers(-15, 16), 0, 99)),
        )
        make = partial(
            speak,
            text=texts.sentence(rng),
            voice=voice,
            seconds=None,
            rms_db=float(rng.uniform(-30, -18)),
            seed=int(rng.integers(2**31)),
            snr_db=float(rng.uniform(8, 35)),
            room=int(rng.integers(2**31)),
        )
        jobs.append(Job(f"sid/{split}/{i:05d}.wav", label, split, label, partial(_crop, make, 2.5)))
    return jobs


def _crop(make: Callable[[], np.ndarray], seconds: float) -> np.ndarray:
    return make()[: int(seconds * RATE)]


EMOTIONS = ("neutral", "sad", "happy", "angry")


def _emotion_voice(rng: np.random.Generator, base: Voice, emotion: str) -> tuple[Voice, float]:
    """Prosody of an emotion relative to a speaker's own; returns (voice, loudness offset dB)."""
    j = lambda a, b: float(rng.uniform(a, b))  # noqa: E731
    rate, pitch = base.rate, base.pitch
    if emotion == "neutral":
        v = Voice(base.name, int(rate * j(0.92, 1.08)), pitch + int(j(-4, 4)), int(j(35, 55)))
        return v, j(-2, 2)
    if emotion == "sad":
        v = Voice(
            base.name,
            int(rate * j(0.62, 0.78)),
            pitch - int(j(10, 22)),
            int(j(3, 18)),
            wordgap=int(j(0, 3)),
        )
        return v, j(-8, -4)
    if emotion == "happy":
        v = Voice(base.name, int(rate * j(1.05, 1.2)), pitch + int(j(10, 22)), int(j(75, 99)))
        return v, j(0, 4)
    v = Voice(
        base.name,
        int(rate * j(1.2, 1.45)),
        pitch + int(j(0, 8)),
        int(j(60, 90)),
        volume=int(j(150, 190)),
    )
    return v, j(4, 8)


def plan_er(scale: float) -> list[Job]:
    """Four emotion-like prosodies; five folds by voice group (like IEMOCAP's sessions)."""
    speakers = voices.speakers(ER_VOICES, seed=stream("er-voices"))
    jobs = []
    i = 0
    for _ in range(count(20, scale)):
        for f, fold in enumerate(FOLDS):
            for label in EMOTIONS:
                rng = clip_rng("er", i)
                k = f * (ER_VOICES // 5) + int(rng.integers(ER_VOICES // 5))
                voice, offset = _emotion_voice(rng, speakers[k], label)
                voice = Voice(
                    voice.name,
                    int(np.clip(voice.rate, 80, 450)),
                    int(np.clip(voice.pitch, 0, 99)),
                    voice.range,
                    voice.volume,
                    voice.wordgap,
                )
                make = partial(
                    speak,
                    text=texts.sentence(rng),
                    voice=voice,
                    seconds=None,
                    rms_db=-24.0 + offset,
                    seed=int(rng.integers(2**31)),
                    snr_db=float(rng.uniform(20, 40)),
                    room=int(rng.integers(2**31)),
                )
                jobs.append(
                    Job(
                        f"er/{fold}/{i:05d}.wav",
                        label,
                        fold,
                        f"voice{k:02d}",
                        partial(_crop, make, 2.5),
                    )
                )
                i += 1
    return jobs


_SYLLABLES = ("la", "laa", "na", "ma", "oo", "ah", "ee", "lo", "da", "no")
_INTERVALS = {"major": (0, 2, 4, 5, 7, 9, 11, 12), "minor": (0, 2, 3, 5, 7, 8, 10, 12)}
SEMITONE = 5  # eSpeak pitch units per semitone, near the middle of its 0-99 scale


def plan_singid(scale: float) -> list[Job]:
    """Singer identity from sung-vowel phrases; same singers in every split, new melodies."""
    singers = voices.speakers(SINGERS, seed=stream("singers"), per_family=3)
    labels = tuple(f"singer{k:02d}" for k in range(len(singers)))
    jobs = []
    for i, label, split in _per_split(labels, {"train": 18, "valid": 3, "test": 4}, scale):
        rng = clip_rng("singid", i)
        base = singers[labels.index(label)]
        scale_steps = _INTERVALS["major" if rng.random() < 0.5 else "minor"]
        centre = int(np.clip(base.pitch, 20, 50))  # keeps every note inside 0-99, unclipped
        degree = int(rng.integers(0, 5))
        notes = []
        for _ in range(int(rng.integers(3, 5))):
            degree = int(np.clip(degree + rng.integers(-2, 3), 0, len(scale_steps) - 1))
            p = int(np.clip(centre - 15 + SEMITONE * scale_steps[degree], 0, 99))
            notes.append((p, _pick(rng, _SYLLABLES)))
        voice = Voice(base.name, rate=int(rng.integers(80, 111)), pitch=centre, range=0)
        make = partial(
            sing,
            notes=tuple(notes),
            voice=voice,
            rms_db=float(rng.uniform(-28, -18)),
            seed=int(rng.integers(2**31)),
            snr_db=float(rng.uniform(25, 40)),
            seconds=2.5,
            room=int(rng.integers(2**31)),
        )
        jobs.append(Job(f"singid/{split}/{i:05d}.wav", label, split, label, make))
    return jobs


_KEY_RANGE = {
    "bass": (28, 52),
    "piano": (36, 84),
    "pipe": (60, 88),
    "reed": (50, 80),
    "brass": (45, 77),
    "strings": (40, 84),
    "synth_lead": (48, 84),
}


def plan_instcls(scale: float) -> list[Job]:
    """Instrument family (11 GM families); test clips use programs unseen in training."""
    part = program_partition()
    jobs = []
    for i, label, split in _per_split(
        INSTRUMENT_FAMILIES, {"train": 24, "valid": 4, "test": 8}, scale
    ):
        rng = clip_rng("instcls", i)
        program = _pick(rng, part[label][split])
        lo, hi = _KEY_RANGE.get(label, (48, 84))
        kind = rng.random()
        vel = float(rng.uniform(0.45, 1.0))
        if kind < 0.4:  # a single note
            notes = (Note(0.0, float(rng.uniform(0.6, 1.1)), int(rng.integers(lo, hi + 1)), vel),)
        elif kind < 0.8:  # a short phrase
            t, key, notes = 0.0, int(rng.integers(lo + 5, hi - 4)), []
            while t < 1.1:
                d = float(_pick(rng, (0.15, 0.2, 0.3, 0.4)))
                notes.append(Note(t, d * 0.9, key, vel * float(rng.uniform(0.8, 1.0))))
                key = int(np.clip(key + rng.integers(-4, 5), lo, hi))
                t += d
            notes = tuple(notes)
        else:  # a chord
            root = int(rng.integers(lo, hi - 7))
            third = 3 if rng.random() < 0.5 else 4
            notes = tuple(Note(0.0, 1.0, k, vel) for k in (root, root + third, root + 7))
        make = partial(
            play,
            notes=notes,
            programs=((0, program),),
            seconds=1.25,
            rms_db=float(rng.uniform(-28, -18)),
        )
        jobs.append(
            Job(f"instcls/{split}/{i:05d}.wav", label, split, f"program{program:03d}", make)
        )
    return jobs


PITCHES = tuple(range(48, 72))  # C3..B4, 24 classes


def plan_pitchid(scale: float) -> list[Job]:
    """MIDI pitch of single notes; test notes come from programs unseen in training."""
    part = program_partition()
    pools = {
        s: tuple(p for fam in part.values() for p in fam[s] if p not in UNPITCHED) for s in SPLITS
    }
    jobs = []
    for i, label, split in _per_split(
        tuple(map(str, PITCHES)), {"train": 12, "valid": 2, "test": 4}, scale
    ):
        rng = clip_rng("pitchid", i)
        program = _pick(rng, pools[split])
        note = Note(0.0, float(rng.uniform(0.5, 0.8)), int(label), float(rng.uniform(0.4, 1.0)))
        make = partial(
            play,
            notes=(note,),
            programs=((0, program),),
            seconds=1.0,
            rms_db=float(rng.uniform(-28, -18)),
        )
        jobs.append(
            Job(f"pitchid/{split}/{i:05d}.wav", label, split, f"program{program:03d}", make)
        )
    return jobs


def _arrangement(
    style: str,
    rng: np.random.Generator,
    seconds: float,
    rms_db: float,
    allowed: Callable[[int], bool] = lambda p: True,
) -> Callable[[], np.ndarray]:
    skip = float(rng.uniform(0, 0.8))
    notes, programs, volumes = genres.arrange(style, rng, seconds + skip, allowed)
    return partial(
        play,
        notes=tuple(notes),
        programs=tuple(sorted(programs.items())),
        seconds=seconds,
        rms_db=rms_db,
        volumes=tuple(sorted(volumes.items())),
        skip=skip,
        room=int(rng.integers(2**31)),
    )


def plan_genreid(scale: float) -> list[Job]:
    """Genre-like styles; clips are independent random arrangements (split by clip)."""
    jobs = []
    for i, label, split in _per_split(
        tuple(genres.STYLES), {"train": 32, "valid": 6, "test": 12}, scale
    ):
        rng = clip_rng("genreid", i)
        make = _arrangement(label, rng, 2.0, float(rng.uniform(-26, -18)))
        jobs.append(Job(f"genreid/{split}/{i:05d}.wav", label, split, "clip", make))
    return jobs


def plan_esc50(scale: float) -> list[Job]:
    """Environmental sounds, 12 classes, five folds."""
    jobs = []
    i = 0
    for _ in range(count(7, scale)):
        for fold in FOLDS:
            for label in sounds.CLASSES:
                rng = clip_rng("esc50", i)
                # half the clips over another class (quieter), half over noise
                others = [c for c in sounds.CLASSES if c != label]
                other = _pick(rng, others) if rng.random() < 0.5 else None
                make = partial(
                    environmental,
                    name=label,
                    seconds=1.5,
                    seed=int(rng.integers(2**31)),
                    rms_db=float(rng.uniform(-30, -18)),
                    bed_db=float(rng.uniform(-24, -12) if other else rng.uniform(-35, -15)),
                    room=int(rng.integers(2**31)),
                    other=other,
                )
                jobs.append(Job(f"esc50/{fold}/{i:05d}.wav", label, fold, "clip", make))
                i += 1
    return jobs


# ------------------------------------------------------------ calibration and pretraining
def _music_piece(
    rng: np.random.Generator, seconds: float, rms_db: float, allowed: Callable[[int], bool]
) -> Callable[[], np.ndarray]:
    """A style arrangement, a melody over chords, or a solo phrase, from allowed programs."""
    kind = rng.random()
    if kind < 0.4:
        return _arrangement(_pick(rng, tuple(genres.STYLES)), rng, seconds, rms_db, allowed)
    progs = tuple(p for fam in PITCHED_FAMILIES for p in GM_FAMILIES[fam] if allowed(p))
    scale_steps = genres.SCALES[_pick(rng, tuple(genres.SCALES))]
    root = 48 + int(rng.integers(12))
    beat = 60.0 / float(rng.uniform(60, 160))
    notes, programs = [], {0: _pick(rng, progs)}
    t, degree = 0.0, int(rng.integers(7))
    while t < seconds:
        d = beat * float(_pick(rng, (0.5, 0.5, 1.0, 1.0, 1.5, 2.0)))
        degree = int(np.clip(degree + rng.integers(-3, 4), -3, 12))
        key = root + 12 * (degree // 7) + scale_steps[degree % 7] + 12
        notes.append(Note(t, d * 0.95, key, float(rng.uniform(0.5, 1.0)), 0))
        t += d
    if kind < 0.75:  # chords under the melody on another program
        programs[1] = _pick(rng, progs)
        t = 0.0
        while t < seconds:
            deg = int(rng.integers(7))
            for k in (0, 2, 4):
                d2 = deg + k
                key = root + 12 * (d2 // 7) + scale_steps[d2 % 7] - 12
                notes.append(Note(t, beat * 4 * 0.95, key, float(rng.uniform(0.4, 0.7)), 1))
            t += beat * 4
    return partial(
        play,
        notes=tuple(notes),
        programs=tuple(sorted(programs.items())),
        seconds=seconds,
        rms_db=rms_db,
        room=int(rng.integers(2**31)),
    )


def _not_held_out() -> tuple[tuple[str, ...], Callable[[int], bool]]:
    """Voices and programs that no probe holds out for testing (for pretraining, calibration)."""
    part, held = voices.partition(), held_out_programs()
    return part["train"] + part["valid"], lambda p: p not in held


def plan_calibration(scale: float) -> list[Job]:
    """Half speech, half music from their own streams (no text, voice draw or melody shared
    with a probe clip), and, like pretraining, without the voices or programs held out for
    testing: the merge must not see the test material either."""
    pool, allowed = _not_held_out()
    jobs = []
    for i in range(count(32, scale)):
        rng = clip_rng("calibration-speech", i)
        voice, variant = voices.random_voice(rng, pool)
        text = " ".join(texts.sentence(rng) for _ in range(2))
        make = partial(
            speak,
            text=text,
            voice=voice,
            seconds=2.5,
            rms_db=float(rng.uniform(-28, -18)),
            seed=int(rng.integers(2**31)),
            snr_db=float(rng.uniform(20, 40)),
            offset=0.0,
            room=int(rng.integers(2**31)),
        )
        jobs.append(Job(f"calibration/speech_{i:03d}.wav", "speech", "calibration", variant, make))
    for i in range(count(32, scale)):
        rng = clip_rng("calibration-music", i)
        make = _music_piece(rng, 2.5, float(rng.uniform(-26, -18)), allowed)
        jobs.append(Job(f"calibration/music_{i:03d}.wav", "music", "calibration", "piece", make))
    return jobs


PRETRAIN_CLIPS = 400  # x ~4.5 s = 30 minutes per domain


def plan_pretrain_speech(scale: float) -> list[Job]:
    """Many voices, accents, rates and pitches reading word sequences; no held-out voices."""
    pool, _ = _not_held_out()
    jobs = []
    for i in range(count(PRETRAIN_CLIPS, scale)):
        rng = clip_rng("pretrain-speech", i)
        seconds = float(rng.uniform(3.0, 6.0))
        voice, variant = voices.random_voice(
            rng, pool, other_languages=0.3, rate=(110, 260), pitch=(15, 85), range_=(10, 95)
        )
        words = int(seconds * voice.rate / 60) + 3
        native = voice.name.split("+")[0] in voices.ENGLISH
        text = (
            texts.sentence(rng) + " " + texts.word_sequence(rng, max(1, words - 6))
            if native or rng.random() < 0.5
            else texts.pseudo_words(rng, words)
        )
        snr = float(rng.uniform(15, 40)) if rng.random() < 0.6 else None
        make = partial(
            _crop,
            partial(
                speak,
                text=text,
                voice=voice,
                seconds=None,
                rms_db=float(rng.uniform(-30, -18)),
                seed=int(rng.integers(2**31)),
                snr_db=snr,
                room=int(rng.integers(2**31)),
            ),
            seconds,
        )
        jobs.append(Job(f"pretrain/speech/{i:05d}.wav", "speech", "pretrain", variant, make))
    return jobs


def plan_pretrain_music(scale: float) -> list[Job]:
    """Styles, melodies over chords and solo phrases; no programs held out for testing."""
    _, allowed = _not_held_out()
    jobs = []
    for i in range(count(PRETRAIN_CLIPS, scale)):
        rng = clip_rng("pretrain-music", i)
        make = _music_piece(
            rng, float(rng.uniform(3.0, 6.0)), float(rng.uniform(-28, -18)), allowed
        )
        jobs.append(Job(f"pretrain/music/{i:05d}.wav", "music", "pretrain", "piece", make))
    return jobs
