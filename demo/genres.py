"""Genre-like styles as note generators: rhythm pattern, tempo, harmony and instrumentation.

A style is what tells the genres apart here, as in GTZAN: a drum groove on a 16-step grid (with
swing where the style swings), a tempo range, a mode and a set of chord progressions, a bass
pattern, a comping pattern and instrument pools per role. Every clip draws its key, tempo,
progression, instruments and fills afresh, so no two clips share their notes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from demo.music import DRUM_CHANNEL, DRUMS, Note

SCALES = {
    "major": (0, 2, 4, 5, 7, 9, 11),
    "minor": (0, 2, 3, 5, 7, 8, 10),
    "dorian": (0, 2, 3, 5, 7, 9, 10),
    "mixolydian": (0, 2, 4, 5, 7, 9, 10),
    "phrygian": (0, 1, 3, 5, 7, 8, 10),
    "harmonic_minor": (0, 2, 3, 5, 7, 8, 11),
}
BASS, COMP, LEAD = 0, 1, 2  # channels
# Instruments any style may borrow (half the clips): styles must differ by more than timbre.
SHARED_BASS = (32, 33, 38)
SHARED_COMP = (0, 4, 16, 25, 27, 48)
DRUM_KITS = (0, 8, 16, 24, 25, 32, 40)  # TimGM6mb's kits (bank 128)


@dataclass(frozen=True)
class Style:
    tempo: tuple[int, int]
    modes: tuple[str, ...]
    progressions: tuple[tuple[int, ...], ...]  # scale degrees, one chord per bar
    drums: dict[str, tuple[int, ...]]  # drum name -> steps (0-15) in a bar
    swing: float  # 0.5 straight; 0.6-0.67 swung 8ths
    bass: tuple[int, ...]  # bass programs
    comp: tuple[int, ...]  # chord instrument programs
    lead: tuple[int, ...]  # melody programs (empty: no melody)
    bass_steps: tuple[int, ...]
    comp_steps: tuple[int, ...]
    comp_length: int  # in steps
    sevenths: bool = False
    power_chords: bool = False
    walking: bool = False
    octave_bass: bool = False
    comp_octave: int = 4


STYLES: dict[str, Style] = {
    "rock": Style(
        tempo=(90, 150),
        modes=("major", "mixolydian"),
        progressions=((0, 3, 4, 0), (0, 4, 5, 3), (0, 5, 3, 4)),
        drums={
            "kick": (0, 8, 10),
            "snare": (4, 12),
            "hat": (0, 2, 4, 6, 8, 10, 12, 14),
            "crash": (0,),
        },
        swing=0.5,
        bass=(33, 34, 35),
        comp=(29, 30, 25, 27),
        lead=(),
        bass_steps=(0, 2, 4, 6, 8, 10, 12, 14),
        comp_steps=(0, 2, 4, 6, 8, 10, 12, 14),
        comp_length=2,
        power_chords=True,
        comp_octave=3,
    ),
    "metal": Style(
        tempo=(130, 200),
        modes=("phrygian", "minor"),
        progressions=((0, 1, 0, 6), (0, 5, 6, 0), (0, 3, 1, 0)),
        drums={"kick": tuple(range(16)), "snare": (4, 12), "crash": (0, 8), "ride": (0, 4, 8, 12)},
        swing=0.5,
        bass=(33, 34, 38),
        comp=(30, 29, 81),
        lead=(),
        bass_steps=tuple(range(16)),
        comp_steps=tuple(range(16)),
        comp_length=1,
        power_chords=True,
        comp_octave=2,
    ),
    "jazz": Style(
        tempo=(100, 200),
        modes=("major",),
        progressions=((1, 4, 0, 0), (1, 4, 0, 5), (0, 5, 1, 4)),
        drums={"ride": (0, 4, 6, 8, 12, 14), "pedal_hat": (4, 12), "kick": (0,)},
        swing=0.64,
        bass=(32, 33, 35),
        comp=(0, 4, 26, 11),
        lead=(65, 66, 56, 73, 11),
        bass_steps=(0, 4, 8, 12),
        comp_steps=(2, 7, 10),
        comp_length=2,
        sevenths=True,
        walking=True,
    ),
    "reggae": Style(
        tempo=(65, 100),
        modes=("major", "minor"),
        progressions=((0, 3), (0, 4), (0, 5, 3, 4)),
        drums={"kick": (8,), "rim": (8,), "hat": (0, 2, 4, 6, 8, 10, 12, 14)},
        swing=0.55,
        bass=(33, 35, 32, 38),
        comp=(16, 17, 27, 4, 0),
        lead=(),
        bass_steps=(0, 3, 6, 10),
        comp_steps=(4, 12),
        comp_length=1,
    ),
    "disco": Style(
        tempo=(110, 135),
        modes=("minor", "dorian"),
        progressions=((0, 3), (0, 5, 3, 4), (1, 4)),
        drums={
            "kick": (0, 4, 8, 12),
            "open_hat": (2, 6, 10, 14),
            "clap": (4, 12),
            "hat": (1, 3, 5, 7, 9, 11, 13, 15),
        },
        swing=0.5,
        bass=(38, 39, 33, 36),
        comp=(48, 50, 4, 62, 27),
        lead=(),
        bass_steps=(0, 2, 4, 6, 8, 10, 12, 14),
        comp_steps=(0,),
        comp_length=16,
        octave_bass=True,
    ),
    "hiphop": Style(
        tempo=(75, 100),
        modes=("minor", "dorian"),
        progressions=((0, 5), (0, 3), (0, 6, 5, 4)),
        drums={"kick": (0, 7, 10), "snare": (4, 12), "hat": (0, 2, 4, 6, 8, 10, 12, 14)},
        swing=0.58,
        bass=(38, 33, 39, 35),
        comp=(4, 5, 11, 0, 88, 89),
        lead=(),
        bass_steps=(0, 7, 10),
        comp_steps=(0,),
        comp_length=16,
        sevenths=True,
    ),
    "classical": Style(
        tempo=(60, 120),
        modes=("major", "harmonic_minor"),
        progressions=((0, 3, 4, 0), (0, 5, 1, 4), (0, 4, 5, 3)),
        drums={},
        swing=0.5,
        bass=(42, 43, 70),
        comp=(48, 49, 0, 46, 52),
        lead=(40, 73, 68, 71, 56),
        bass_steps=(0, 8),
        comp_steps=(0,),
        comp_length=16,
    ),
    "country": Style(
        tempo=(90, 140),
        modes=("major",),
        progressions=((0, 3, 4, 0), (0, 4, 3, 0), (0, 0, 3, 4)),
        drums={"kick": (0, 8), "snare": (4, 12), "hat": (0, 2, 4, 6, 8, 10, 12, 14)},
        swing=0.52,
        bass=(32, 33, 34),
        comp=(25, 24, 27, 0),
        lead=(110, 105, 22, 40),
        bass_steps=(0, 4, 8, 12),
        comp_steps=(0, 2, 4, 6, 8, 10, 12, 14),
        comp_length=2,
    ),
}


def _pick(rng: np.random.Generator, items: tuple[int, ...]) -> int:
    return items[int(rng.integers(len(items)))]


def _degree(root: int, scale: tuple[int, ...], degree: int) -> int:
    return root + 12 * (degree // 7) + scale[degree % 7]


def arrange(
    style: str,
    rng: np.random.Generator,
    seconds: float,
    allowed: Callable[[int], bool] = lambda p: True,
) -> tuple[list[Note], dict[int, int], dict[int, float]]:
    """Notes, channel programs and channel volumes for ``seconds`` of ``style``.

    ``allowed`` filters instrument pools (the pretraining corpus uses it to keep held-out
    programs out); a pool that would become empty keeps its first program.
    """
    s = STYLES[style]

    def pool(programs: tuple[int, ...]) -> tuple[int, ...]:
        kept = tuple(p for p in programs if allowed(p))
        return kept or programs[:1]

    bpm = float(rng.uniform(*s.tempo))
    step = 60.0 / bpm / 4  # a 16th note
    scale = SCALES[s.modes[int(rng.integers(len(s.modes)))]]
    root = 36 + int(rng.integers(12))  # bass octave
    prog = s.progressions[int(rng.integers(len(s.progressions)))]
    bar = 16 * step
    n_bars = int(np.ceil(seconds / bar)) + 1
    start_bar = int(rng.integers(len(prog)))
    swing_shift = (s.swing - 0.5) * 2 * step  # delay of the off-beat 8th

    def when(bar_ix: int, st: int) -> float:
        t = bar_ix * bar + st * step
        if st % 4 == 2:
            t += swing_shift
        return t + float(rng.normal(0, 0.004))  # a little human timing

    notes: list[Note] = []
    programs = {
        BASS: _pick(rng, pool(SHARED_BASS if rng.random() < 0.5 else s.bass)),
        COMP: _pick(rng, pool(SHARED_COMP if rng.random() < 0.5 else s.comp)),
    }
    volumes = {
        BASS: float(rng.uniform(0.6, 1.0)),
        COMP: float(rng.uniform(0.4, 0.8)),
        DRUM_CHANNEL: float(rng.uniform(0.5, 1.0)),
    }
    drums = {k: v for k, v in s.drums.items() if rng.random() > 0.15} or s.drums
    if drums:
        programs[DRUM_CHANNEL] = _pick(rng, DRUM_KITS)
    lead = pool(s.lead) if s.lead else ()
    if lead and rng.random() < 0.8:
        programs[LEAD] = _pick(rng, lead)
        volumes[LEAD] = float(rng.uniform(0.6, 0.9))
    melody = _degree(root + 24, scale, int(rng.integers(7)))
    for b in range(n_bars):
        degree = prog[(start_bar + b) % len(prog)]
        chord_root = _degree(root, scale, degree)
        tones = [
            _degree(root, scale, degree + i) for i in ((0, 2, 4, 6) if s.sevenths else (0, 2, 4))
        ]
        # drums
        for name, steps in drums.items():
            for st in steps:
                if name in ("crash",) and b % 2:
                    continue
                vel = 0.9 if st % 4 == 0 else 0.6
                if rng.random() < 0.93:  # occasional dropped hit
                    notes.append(
                        Note(
                            when(b, st),
                            step,
                            DRUMS[name],
                            vel * rng.uniform(0.8, 1.0),
                            DRUM_CHANNEL,
                        )
                    )
        # bass
        for i, st in enumerate(s.bass_steps):
            if s.walking:
                key = (
                    tones[i % len(tones)] if i % 2 == 0 else chord_root + _pick(rng, (2, 5, 7, -1))
                )
            elif s.octave_bass:
                key = chord_root + (12 if i % 2 else 0)
            else:
                key = chord_root + (7 if (i % 4 == 3 and rng.random() < 0.4) else 0)
            length = (16 - st) if len(s.bass_steps) <= 3 else 2 if s.octave_bass else 3
            notes.append(
                Note(when(b, st), length * step * 0.9, int(key), rng.uniform(0.6, 0.9), BASS)
            )
        # comping
        octave = 12 * (s.comp_octave - 3)
        voicing = (
            [chord_root + octave, chord_root + octave + 7, chord_root + octave + 12]
            if (s.power_chords)
            else [t + octave + 12 for t in tones]
        )
        for st in s.comp_steps:
            if rng.random() < 0.9:
                for j, key in enumerate(voicing):
                    strum = j * 0.012 if programs[COMP] in (24, 25, 26) else 0.0
                    notes.append(
                        Note(
                            when(b, st) + strum,
                            s.comp_length * step * 0.95,
                            int(key),
                            rng.uniform(0.5, 0.8),
                            COMP,
                        )
                    )
        # melody: a random walk on the scale, snapping to chord tones on the beat
        if LEAD in programs:
            st = 0
            while st < 16:
                length = _pick(rng, (2, 2, 4, 4, 6, 8))
                melody += _pick(rng, (-2, -1, -1, 0, 1, 1, 2))
                melody = int(np.clip(melody, root + 19, root + 36))
                degree_rel = melody - root
                key = (
                    root
                    + 12 * (degree_rel // 12)
                    + min(scale, key=lambda x: abs(x - degree_rel % 12))
                )
                notes.append(
                    Note(when(b, st), length * step * 0.9, int(key), rng.uniform(0.6, 0.9), LEAD)
                )
                st += length
    return notes, programs, volumes
