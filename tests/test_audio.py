import numpy as np
import pytest
import soundfile as sf

from merging.audio import AudioError, calibration_clips, read_audio, synthetic_clips


def tone(rate, seconds, freq=440.0, channels=1):
    t = np.arange(int(rate * seconds)) / rate
    x = 0.5 * np.sin(2 * np.pi * freq * t).astype(np.float32)
    return np.stack([x] * channels, axis=1) if channels > 1 else x


def write_mixed_folder(root):
    root.mkdir(parents=True, exist_ok=True)
    sf.write(root / "a.wav", tone(16000, 1.0), 16000)
    sf.write(root / "b.flac", tone(22050, 1.5, channels=2), 22050)
    sf.write(root / "c.ogg", tone(8000, 1.0), 8000)
    sf.write(root / "silent.wav", np.zeros(16000, dtype=np.float32), 16000)
    (root / "broken.wav").write_bytes(b"RIFF not really a wave file")
    return root


def test_reads_any_format_and_rate_as_mono_at_target_rate(tmp_path):
    root = write_mixed_folder(tmp_path / "mix")
    flac = read_audio(root / "b.flac", 16000)
    assert flac.ndim == 1 and abs(flac.size - 24000) <= 2
    assert read_audio(root / "c.ogg", 16000, max_seconds=0.5).size == 8000
    assert read_audio(root / "broken.wav", 16000) is None
    assert read_audio(root / "silent.wav", 16000) is None


def test_calibration_set_skips_and_counts_bad_files_and_balances_folders(tmp_path):
    speech = write_mixed_folder(tmp_path / "speech")
    music = tmp_path / "music"
    music.mkdir()
    for i in range(4):
        sf.write(music / f"m{i}.wav", tone(16000, 0.5, 200 + 50 * i), 16000)
    clips, skipped = calibration_clips([speech, music], 6, 16000, 1.0, seed=0)
    assert len(clips) == 6 and len(skipped) == 2
    assert sum("music" in c.name for c in clips) == 3
    assert max(c.wave.numel() for c in clips) <= 16000  # cropped to max_seconds
    again, _ = calibration_clips([speech, music], 6, 16000, 1.0, seed=0)
    assert [c.name for c in again] == [c.name for c in clips]


def test_bad_calibration_inputs_are_clear_errors(tmp_path):
    with pytest.raises(AudioError, match="does not exist"):
        calibration_clips([tmp_path / "missing"], 3, 16000, 1.0, 0)
    (tmp_path / "empty").mkdir()
    with pytest.raises(AudioError, match="holds no audio"):
        calibration_clips([tmp_path / "empty"], 3, 16000, 1.0, 0)
    with pytest.raises(AudioError, match="must be positive"):
        calibration_clips([], 0, 16000, 1.0, 0)


def test_synthetic_set_is_deterministic():
    a, b = synthetic_clips(3, 16000, 0.25, 7), synthetic_clips(3, 16000, 0.25, 7)
    assert all(np.array_equal(x.wave, y.wave) for x, y in zip(a, b, strict=True))
