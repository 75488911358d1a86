"""Offline music: General MIDI notes rendered by tinysoundfont from the soundfont in pretty_midi.

``pretty_midi`` ships ``TimGM6mb.sf2`` (128 GM programs and the GM drum kits, 6 MB);
``tinysoundfont`` renders it straight to 16 kHz mono. Install tinysoundfont with ``--no-deps``:
its declared ``pyaudio`` dependency is only for playback and does not build everywhere.

Why every clip gets a fresh synthesiser: a reused one carries state (envelopes, voice slots)
from the previous clip into the next, so the same notes render differently depending on what
came before. A clone of the loaded soundfont starts clean, costs microseconds and shares the
sample data.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

RATE = 16000
DRUM_CHANNEL = 9

# General MIDI program families (8 programs each); the names are the families' usual names.
GM_FAMILIES: dict[str, tuple[int, ...]] = {
    name: tuple(range(8 * i, 8 * i + 8))
    for i, name in enumerate(
        (
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
            "synth_effects",
            "ethnic",
            "percussive",
            "sound_effects",
        )
    )
}
# GM drum keys used by the style generator.
DRUMS = {
    "kick": 36,
    "snare": 38,
    "rim": 37,
    "clap": 39,
    "hat": 42,
    "pedal_hat": 44,
    "open_hat": 46,
    "low_tom": 45,
    "mid_tom": 47,
    "high_tom": 50,
    "crash": 49,
    "ride": 51,
    "cowbell": 56,
    "shaker": 70,
    "clave": 75,
}


class MusicError(RuntimeError):
    """tinysoundfont or the soundfont is missing."""


@dataclass(frozen=True)
class Note:
    """One note: onset and length in seconds, MIDI key, velocity 0-1, MIDI channel."""

    start: float
    duration: float
    key: int
    velocity: float = 0.8
    channel: int = 0


def soundfont_path() -> Path:
    """``TimGM6mb.sf2`` inside the installed pretty_midi package, or an error naming it."""
    try:
        import pretty_midi
    except ImportError as e:
        raise MusicError(
            "demo music needs the GM soundfont shipped with pretty_midi: "
            "pip install pretty_midi==0.2.11.post0"
        ) from e
    path = Path(pretty_midi.__file__).parent / "TimGM6mb.sf2"
    if not path.is_file():
        raise MusicError(f"{path} is missing; reinstall pretty_midi==0.2.11.post0")
    return path


@lru_cache(maxsize=1)
def _loaded():  # noqa: ANN202 - tinysoundfont's SoundFont type is private
    try:
        from tinysoundfont import _tinysoundfont
    except ImportError as e:
        raise MusicError(
            "demo music needs tinysoundfont: pip install --no-deps tinysoundfont==0.3.7"
        ) from e
    return _tinysoundfont, _tinysoundfont.SoundFont(str(soundfont_path()))


def _fresh(rate: int):  # noqa: ANN202
    tsf, base = _loaded()
    synth = tsf.SoundFont(base)  # a clone: shared samples, clean state
    synth.set_output(tsf.OutputMode.Mono, rate, 0.0)
    synth.set_max_voices(256)
    return synth


def render(
    notes: Iterable[Note],
    programs: dict[int, int],
    seconds: float,
    rate: int = RATE,
    volumes: dict[int, float] | None = None,
) -> np.ndarray:
    """Mix ``notes`` into ``seconds`` of float32 audio; ``programs`` maps channel -> GM program.

    Channel 9 is the GM drum channel (its program picks the kit, 0 = standard). Notes still
    sounding at the end are cut off, as in a crop of a longer recording.
    """
    synth = _fresh(rate)
    for channel, program in programs.items():
        synth.channel_set_preset_number(channel, int(program), channel == DRUM_CHANNEL)
        synth.channel_set_volume(channel, float((volumes or {}).get(channel, 1.0)))
    total = int(round(seconds * rate))
    events = []
    for n in notes:
        on = int(round(n.start * rate))
        if on >= total:
            continue
        events.append((on, 1, n.channel, n.key, n.velocity))
        events.append((int(round((n.start + n.duration) * rate)), 0, n.channel, n.key, 0.0))
    events.sort()  # by time; at one instant offs (0) before ons (1)
    out = np.zeros(total, np.float32)
    view = memoryview(out).cast("B")
    pos = 0
    for at, is_on, channel, key, velocity in events:
        at = min(at, total)
        if at > pos:
            synth.render(view[pos * 4 : at * 4], False)
            pos = at
        if is_on:
            synth.channel_note_on(channel, key, float(np.clip(velocity, 0.01, 1.0)))
        else:
            synth.channel_note_off(channel, key)
    if pos < total:
        synth.render(view[pos * 4 :], False)
    return out


def render_note(
    program: int, key: int, velocity: float, hold: float, seconds: float, rate: int = RATE
) -> np.ndarray:
    """One note held for ``hold`` seconds then released, in a clip of ``seconds``."""
    return render([Note(0.0, hold, key, velocity)], {0: program}, seconds, rate)


def family_of(program: int) -> str:
    return next(name for name, progs in GM_FAMILIES.items() if program in progs)


def dominant_frequency(wave: np.ndarray, rate: int = RATE) -> float:
    """The fundamental by harmonic product spectrum (robust to a strong second harmonic)."""
    n = 1 << int(np.ceil(np.log2(max(len(wave), 2) * 4)))
    spec = np.abs(np.fft.rfft(wave * np.hanning(len(wave)), n))
    hps = spec.copy()
    for h in (2, 3):
        dec = spec[::h]
        hps[: len(dec)] *= dec
    lo = int(25 * n / rate)  # ignore DC and sub-audio
    top = len(spec) // 3
    return float((lo + np.argmax(hps[lo:top])) * rate / n)


def midi_to_hz(key: float) -> float:
    return 440.0 * 2.0 ** ((key - 69) / 12)
