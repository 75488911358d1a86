"""Offline speech from the eSpeak NG library bundled in the ``espeakng-loader`` wheel, via ctypes.

Why the library is loaded afresh for every utterance: libespeak-ng keeps synthesis state in C
statics that no API call resets (the pitch-flutter phase, the automatic gain, the echo buffer),
so the same text twice in one process gives different samples. Loading the shared object,
synthesising one utterance and unloading it again (``dlclose``) starts every utterance from the
same state. Breath noise (voices such as ``whisper``, ``f2``, ``victor``) comes from eSpeak's own
generator, seeded from the clock at initialisation, and from libc ``rand()``: both are seeded
per utterance. The output is then a pure function of the text and the voice, for about 5 ms of
overhead per utterance.
"""

from __future__ import annotations

import ctypes
import threading
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import soxr

RATE = 16000  # the encoders' rate; everything this package returns is at this rate
NATIVE_RATE = 22050  # what eSpeak NG produces

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_PARAM = {"rate": 1, "volume": 2, "pitch": 3, "range": 4, "wordgap": 7}
_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)


class SpeechError(RuntimeError):
    """eSpeak NG is missing, or it refused a voice."""


@dataclass(frozen=True)
class Voice:
    """An eSpeak NG voice (``language+variant``, e.g. ``en-us+f2``) and its prosody settings."""

    name: str = "en"
    rate: int = 175  # words per minute, 80-450
    pitch: int = 50  # base pitch, 0-99
    range: int = 50  # pitch range (intonation), 0-99; 0 is monotone
    volume: int = 100  # amplitude, 0-200
    wordgap: int = 0  # extra pause between words, in units of 10 ms


@lru_cache(maxsize=1)
def _paths() -> tuple[str, bytes]:
    """The shared library and the ``espeak-ng-data`` folder, or an error naming the wheel."""
    try:
        import espeakng_loader
    except ImportError as e:
        raise SpeechError("demo speech needs eSpeak NG: pip install espeakng-loader==0.2.4") from e
    lib, data = Path(espeakng_loader.get_library_path()), Path(espeakng_loader.get_data_path())
    if not lib.is_file() or not data.is_dir():
        raise SpeechError(
            f"espeakng-loader is installed but {lib} or {data} is missing; "
            "reinstall it: pip install --force-reinstall espeakng-loader==0.2.4"
        )
    return str(lib), str(data).encode()


_lock = threading.Lock()
_chunks: list[np.ndarray] = []


@_CALLBACK
def _collect(wav, n, _events):  # noqa: ANN001 - ctypes callback signature
    if wav and n > 0:
        _chunks.append(np.ctypeslib.as_array(wav, (n,)).copy())
    return 0


def _load() -> ctypes.CDLL:
    lib_path, data = _paths()
    lib = ctypes.CDLL(lib_path)
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.espeak_Initialize.restype = ctypes.c_int
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
    lib.espeak_Synth.argtypes = [
        ctypes.c_void_p,
        ctypes.c_size_t,
        ctypes.c_uint,
        ctypes.c_int,
        ctypes.c_uint,
        ctypes.c_uint,
        ctypes.c_void_p,
        ctypes.c_void_p,
    ]
    rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data, 0)
    if rate != NATIVE_RATE:
        raise SpeechError(f"espeak_Initialize returned {rate} (expected {NATIVE_RATE} Hz)")
    lib.espeak_SetSynthCallback(_collect)
    return lib


def _unload(lib: ctypes.CDLL) -> None:
    import _ctypes

    lib.espeak_Terminate()
    _ctypes.dlclose(lib._handle)  # the last handle: the next _load() maps fresh statics


_libc = ctypes.CDLL(None)


def synthesize_native(text: str, voice: Voice = Voice()) -> np.ndarray:
    """int16 samples at 22050 Hz, identical for identical arguments.

    ``text`` may carry eSpeak embedded commands (``"\\x0160P"`` sets the pitch to 60 mid-text).
    """
    with _lock:
        lib = _load()
        try:
            if lib.espeak_SetVoiceByName(voice.name.encode()) != 0:
                raise SpeechError(f"eSpeak NG has no voice {voice.name!r}")
            for key, value in (
                ("rate", voice.rate),
                ("pitch", voice.pitch),
                ("range", voice.range),
                ("volume", voice.volume),
                ("wordgap", voice.wordgap),
            ):
                lib.espeak_SetParameter(_PARAM[key], int(value), 0)
            _chunks.clear()
            lib.espeak_ng_SetRandSeed(1)  # breath noise; seeded from the clock otherwise
            _libc.srand(1)
            buf = text.encode() + b"\0"
            err = lib.espeak_Synth(buf, len(buf), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
            lib.espeak_Synchronize()
            if err != 0:
                raise SpeechError(f"espeak_Synth failed ({err}) for {text!r}")
            out = np.concatenate(_chunks) if _chunks else np.zeros(0, np.int16)
            _chunks.clear()
        finally:
            _unload(lib)
    return out.astype(np.int16, copy=False)


def synthesize(text: str, voice: Voice = Voice()) -> np.ndarray:
    """float32 mono at 16 kHz (resampled with soxr), identical for identical arguments."""
    native = synthesize_native(text, voice).astype(np.float32) / 32768.0
    if native.size == 0:
        return native
    return soxr.resample(native, NATIVE_RATE, RATE).astype(np.float32)


def check_deterministic() -> None:
    """Fail loudly if this platform's libespeak-ng keeps state across unloads."""
    v = Voice("en+m3", rate=160, pitch=40)
    first = synthesize_native("reproducible", v)
    synthesize_native("another utterance in between", Voice("en-us+f2"))
    if not np.array_equal(first, synthesize_native("reproducible", v)):
        raise SpeechError(
            "eSpeak NG gave different samples for the same text twice (the library was not "
            "unloaded between utterances), so the demo suite would not be reproducible"
        )
