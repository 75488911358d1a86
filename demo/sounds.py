"""Environmental sounds and background noises synthesised with numpy, for an ESC-50-style task.

Each class is a small physical caricature (drops, gusts, a firing engine, a sweeping siren, ...)
whose parameters are drawn per clip, so a class is a family of sounds rather than one sample
repeated. Every function takes a seeded generator and returns float32 at ``rate`` with a peak
of about 1; callers set the level.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy import signal  # waveforms only (sawtooth, square)

RATE = 16000


def colored_noise(rng: np.random.Generator, n: int, exponent: float) -> np.ndarray:
    """Noise with a 1/f**exponent power spectrum (0 white, 1 pink, 2 brown)."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n)
    f[0] = f[1] if n > 1 else 1.0
    spec *= f ** (-exponent / 2)
    out = np.fft.irfft(spec, n)
    return _norm(out)


def _norm(x: np.ndarray) -> np.ndarray:
    peak = float(np.max(np.abs(x))) if x.size else 0.0
    return (x / peak if peak > 0 else x).astype(np.float32)


def _band(
    x: np.ndarray, lo: float | None, hi: float | None, rate: int, order: int = 4
) -> np.ndarray:
    """Zero-phase Butterworth-shaped band/high/low-pass, applied in the frequency domain.

    Designing an IIR filter per clip (the cut-offs are random) cost more than the whole rest
    of a clip; a magnitude mask on the zero-padded FFT is cheap and deterministic.
    """
    n = len(x)
    size = 1 << int(np.ceil(np.log2(n + 2048)))
    f = np.fft.rfftfreq(size, 1 / rate)
    gain = np.ones_like(f)
    if hi:
        gain /= np.sqrt(1 + (f / hi) ** (2 * order))
    if lo:
        with np.errstate(divide="ignore"):
            gain /= np.sqrt(1 + (lo / np.maximum(f, 1e-6)) ** (2 * order))
    return np.fft.irfft(np.fft.rfft(x, size) * gain, size)[:n]


def _decay(n: int, tau: float, rate: int) -> np.ndarray:
    return np.exp(-np.arange(n) / (tau * rate))


def _place(out: np.ndarray, event: np.ndarray, at: int) -> None:
    if at >= len(out):
        return
    end = min(len(out), at + len(event))
    out[at:end] += event[: end - at]


def _lfo(rng: np.random.Generator, n: int, rate: int, lo: float, hi: float) -> np.ndarray:
    """A slow random wobble in [0, 1] from a few incommensurate sines."""
    t = np.arange(n) / rate
    x = sum(
        np.sin(2 * np.pi * rng.uniform(lo, hi) * t + rng.uniform(0, 2 * np.pi)) for _ in range(3)
    )
    return (x - x.min()) / (np.ptp(x) + 1e-9)


def rain(rng: np.random.Generator, n: int, rate: int = RATE) -> np.ndarray:
    bed = _band(colored_noise(rng, n, 1.0), 400, 7000, rate) * rng.uniform(0.1, 0.4)
    drops = np.zeros(n)
    count = rng.poisson(rng.uniform(40, 300) * n / rate)
    kernel = rng.standard_normal(int(0.004 * rate)) * _decay(int(0.004 * rate), 0.001, rate)
    idx = rng.integers(0, n, count)
    np.add.at(drops, idx, rng.uniform(0.2, 1.0, count))
    drops = _band(np.convolve(drops, kernel)[:n], 1000, 7500, rate)
    return _norm(bed + drops)


def wind(rng: np.random.Generator, n: int, rate: int = RATE) -> np.ndarray:
    base = colored_noise(rng, n, 2.0)
    low = _band(base, 80, rng.uniform(300, 700), rate, 2)
    high = _band(
        colored_noise(rng, n, 1.0), rng.uniform(500, 900), rng.uniform(1200, 2500), rate, 2
    )
    gust = _lfo(rng, n, rate, 0.1, 0.6)
    return _norm(low * (0.3 + gust) + 0.4 * high * gust**2)


def engine(rng: np.random.Generator, n: int, rate: int = RATE) -> np.ndarray:
    t = np.arange(n) / rate
    f0 = rng.uniform(20, 70) * (1 + 0.08 * (_lfo(rng, n, rate, 0.05, 0.3) - 0.5))
    phase = 2 * np.pi * np.cumsum(f0) / rate
    slope = rng.uniform(0.5, 1.2)
    x = sum(
        (k**-slope) * rng.uniform(0.5, 1.0) * np.sin(k * phase + rng.uniform(0, 6.3))
        for k in range(1, 25)
    )
    rumble = _band(colored_noise(rng, n, 1.0), 50, 800, rate) * (0.5 + 0.5 * np.sin(phase))
    del t
    return _norm(_band(x + 0.6 * rumble, None, rng.uniform(900, 3000), rate))


def siren(rng: np.random.Generator, n: int, rate: int = RATE) -> np.ndarray:
    t = np.arange(n) / rate
    lo, hi = rng.uniform(500, 850), rng.uniform(1100, 1800)
    period = rng.choice([rng.uniform(0.15, 0.35), rng.uniform(1.5, 4.0)])  # yelp or wail
    f = lo + (hi - lo) * (0.5 - 0.5 * np.cos(2 * np.pi * t / period + rng.uniform(0, 6.3)))
    phase = 2 * np.pi * np.cumsum(f) / rate
    x = np.sin(phase) + 0.3 * np.sin(2 * phase) + 0.15 * np.sin(3 * phase)
    return _norm(x + 0.02 * rng.standard_normal(n))


def bird_chirp(rng: np.random.Generator, n: int, rate: int = RATE) -> np.ndarray:
    out = np.zeros(n)
    t = 0.0
    while True:
        t += rng.uniform(0.05, 0.5)
        at = int(t * rate)
        if at >= n:
            break
        repeats = int(rng.integers(1, 5))  # trills
        dur = rng.uniform(0.03, 0.15)
        f1, f2 = rng.uniform(2000, 6500), rng.uniform(1800, 7000)
        m = int(dur * rate)
        tt = np.arange(m) / m
        f = f1 + (f2 - f1) * tt ** rng.uniform(0.5, 2.0)
        chirp = np.sin(2 * np.pi * np.cumsum(f) / rate) * np.hanning(m) * rng.uniform(0.4, 1.0)
        for r in range(repeats):
            _place(out, chirp, at + r * int(m * 1.3))
        t += repeats * dur * 1.3
    return _norm(out + 0.01 * rng.standard_normal(n))


def dog_bark(rng: np.random.Generator, n: int, rate: int = RATE) -> np.ndarray:
    out = np.zeros(n)
    t = rng.uniform(0.0, 0.3)
    for _ in range(int(rng.integers(1, 5))):
        m = int(rng.uniform(0.1, 0.25) * rate)
        tt = np.arange(m) / rate
        f0 = rng.uniform(350, 800) * np.exp(-tt * rng.uniform(2, 6))
        phase = 2 * np.pi * np.cumsum(f0) / rate
        voiced = signal.sawtooth(phase) + 0.5 * rng.standard_normal(m)
        env = (1 - np.exp(-tt / 0.008)) * np.exp(-tt / rng.uniform(0.04, 0.1))
        bark = _band(voiced * env, rng.uniform(300, 600), rng.uniform(1500, 3000), rate)
        _place(out, bark, int(t * rate))
        t += m / rate + rng.uniform(0.1, 0.4)
    return _norm(out)


def door_knock(rng: np.random.Generator, n: int, rate: int = RATE) -> np.ndarray:
    out = np.zeros(n)
    t = rng.uniform(0.05, 0.4)
    body_f = rng.uniform(80, 250)
    panel_f = rng.uniform(400, 900)
    gap = rng.uniform(0.12, 0.3)
    for _ in range(int(rng.integers(2, 7))):
        m = int(0.12 * rate)
        tt = np.arange(m) / rate
        hit = np.sin(2 * np.pi * body_f * tt) * np.exp(
            -tt / rng.uniform(0.02, 0.05)
        ) + 0.5 * np.sin(2 * np.pi * panel_f * tt) * np.exp(-tt / 0.015)
        click = rng.standard_normal(m) * np.exp(-tt / 0.002) * 0.5
        _place(out, (hit + click) * rng.uniform(0.6, 1.0), int(t * rate))
        t += gap * rng.uniform(0.85, 1.15)
    return _norm(out)


def clock_tick(rng: np.random.Generator, n: int, rate: int = RATE) -> np.ndarray:
    out = np.zeros(n)
    period = rng.choice([0.25, 0.5, 1.0]) * rng.uniform(0.95, 1.05)
    f_tick, f_tock = rng.uniform(2500, 4500), rng.uniform(1200, 2500)
    t, i = rng.uniform(0, period), 0
    while t < n / rate:
        m = int(0.02 * rate)
        tt = np.arange(m) / rate
        f = f_tick if i % 2 == 0 else f_tock
        tick = (np.sin(2 * np.pi * f * tt) + 0.5 * rng.standard_normal(m)) * np.exp(-tt / 0.003)
        _place(out, tick, int(t * rate))
        t += period
        i += 1
    return _norm(out + 0.003 * rng.standard_normal(n))


def alarm_beeps(rng: np.random.Generator, n: int, rate: int = RATE) -> np.ndarray:
    t = np.arange(n) / rate
    f = rng.uniform(1800, 4000)
    on, off = rng.uniform(0.05, 0.2), rng.uniform(0.05, 0.2)
    group, pause = int(rng.integers(2, 5)), rng.uniform(0.2, 0.6)
    cycle = group * (on + off) + pause
    pos = (t + rng.uniform(0, cycle)) % cycle
    gate = ((pos < group * (on + off)) & ((pos % (on + off)) < on)).astype(float)
    gate = np.convolve(gate, np.hanning(int(0.004 * rate)) / (0.002 * rate), "same")
    tone = signal.square(2 * np.pi * f * t, duty=rng.uniform(0.3, 0.5))
    return _norm(_band(tone * gate, None, 7000, rate))


def thunder(rng: np.random.Generator, n: int, rate: int = RATE) -> np.ndarray:
    start = int(rng.uniform(0.0, 0.4) * rate)
    m = n - start
    tt = np.arange(m) / rate
    crack = _band(rng.standard_normal(m), 1000, None, rate) * np.exp(-tt / rng.uniform(0.02, 0.08))
    rumble = _band(colored_noise(rng, m, 2.0), 20, rng.uniform(150, 400), rate)
    env = (1 - np.exp(-tt / 0.05)) * np.exp(-tt / rng.uniform(0.6, 2.5))
    env *= 0.5 + _lfo(rng, m, rate, 1.0, 5.0)
    out = np.zeros(n)
    out[start:] = rng.uniform(0.1, 0.6) * crack + rumble * env * 3
    return _norm(out)


def water_drip(rng: np.random.Generator, n: int, rate: int = RATE) -> np.ndarray:
    out = np.zeros(n)
    mean_gap = rng.uniform(0.15, 0.7)
    t = rng.uniform(0, mean_gap)
    while t < n / rate:
        m = int(0.06 * rate)
        tt = np.arange(m) / rate
        f0 = rng.uniform(500, 1600)
        f = f0 * (1 + rng.uniform(0.5, 1.5) * tt / 0.06)  # a bubble's rising pitch
        drop = np.sin(2 * np.pi * np.cumsum(f) / rate) * np.exp(-tt / rng.uniform(0.01, 0.03))
        _place(out, drop * rng.uniform(0.5, 1.0), int(t * rate))
        t += mean_gap * rng.uniform(0.6, 1.4)
    return _norm(out + 0.004 * rng.standard_normal(n))


def crickets(rng: np.random.Generator, n: int, rate: int = RATE) -> np.ndarray:
    t = np.arange(n) / rate
    carrier = np.sin(2 * np.pi * rng.uniform(3500, 5500) * t)
    pulse_rate = rng.uniform(25, 60)
    pulses = (np.sin(2 * np.pi * pulse_rate * t) > 0.3).astype(float)
    period = rng.uniform(0.3, 1.0)
    per_chirp = int(rng.integers(3, 7)) / pulse_rate
    chirps = ((t + rng.uniform(0, period)) % period < per_chirp).astype(float)
    env = np.convolve(pulses * chirps, np.hanning(32) / 16, "same")
    return _norm(carrier * env + 0.01 * rng.standard_normal(n))


CLASSES: dict[str, Callable[[np.random.Generator, int, int], np.ndarray]] = {
    f.__name__: f
    for f in (
        rain,
        wind,
        engine,
        siren,
        bird_chirp,
        dog_bark,
        door_knock,
        clock_tick,
        alarm_beeps,
        thunder,
        water_drip,
        crickets,
    )
}


def hum(rng: np.random.Generator, n: int, rate: int = RATE) -> np.ndarray:
    """Mains hum with harmonics, a common recording background."""
    t = np.arange(n) / rate
    f = rng.choice([50.0, 60.0])
    return _norm(
        sum(rng.uniform(0.2, 1.0) / k * np.sin(2 * np.pi * k * f * t) for k in (1, 2, 3, 5))
    )


def background(rng: np.random.Generator, n: int, rate: int = RATE) -> np.ndarray:
    """A random background for mixing under speech: coloured noise, hum, rain, wind or engine."""
    kind = int(rng.integers(7))
    if kind < 3:
        return colored_noise(rng, n, float(kind))
    return (hum, rain, wind, engine)[kind - 3](rng, n, rate)


def mix_at_snr(clean: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """``clean`` plus ``noise`` scaled to ``snr_db`` (power over the clean signal's active part)."""
    active = clean[np.abs(clean) > 0.05 * (np.abs(clean).max() + 1e-12)]
    p_clean = float(np.mean(active**2)) if active.size else 0.0
    p_noise = float(np.mean(noise**2)) + 1e-12
    if p_clean == 0.0:
        return clean.astype(np.float32)
    gain = np.sqrt(p_clean / (p_noise * 10 ** (snr_db / 10)))
    return (clean + gain * noise).astype(np.float32)


def channel(rng: np.random.Generator, wave: np.ndarray, rate: int = RATE) -> np.ndarray:
    """A random recording chain: a room (reverb, half the time), band limits and spectral tilt.

    Real corpora are recorded through many rooms and microphones; without this, identity and
    class cues in the demo would be cleaner than anything an encoder meets in practice.
    """
    x = wave.astype(np.float64)
    n = len(x)
    tail = int(0.6 * rate) if rng.random() < 0.5 else 0
    size = 1 << int(np.ceil(np.log2(n + tail + 2048)))
    spec = np.fft.rfft(x, size)
    if tail:
        rt60 = rng.uniform(0.15, 0.6)
        t = np.arange(tail) / rate
        ir = rng.standard_normal(tail) * np.exp(-6.9 * t / rt60)
        ir *= rng.uniform(0.1, 0.5) / np.sqrt(np.sum(ir**2))
        ir[0] = 1.0  # the direct sound
        spec *= np.fft.rfft(ir, size)
    f = np.fft.rfftfreq(size, 1 / rate)
    lo, hi = rng.uniform(50, 300), rng.uniform(3500, 7800)
    gain = 1 / np.sqrt(1 + (f / hi) ** 4)
    with np.errstate(divide="ignore"):
        gain /= np.sqrt(1 + (lo / np.maximum(f, 1e-6)) ** 4)
    gain *= (np.maximum(f, 100.0) / 1000.0) ** rng.uniform(-0.4, 0.4)  # dull .. bright
    return np.fft.irfft(spec * gain, size)[:n].astype(np.float32)
