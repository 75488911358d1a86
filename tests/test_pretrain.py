"""Demo-encoder pretraining: frame alignment of the targets, k-means, and a short real run."""

import json

import numpy as np
import pytest
import soundfile as sf
import torch

from demo.pretrain import (
    SEMITONES,
    PretrainSettings,
    demo_config,
    frame_features,
    kmeans,
    pretrain,
    semitone_spectrum,
    write_card,
)
from merging.forward import conv_output_lengths
from merging.load import load_encoder

TINY = dict(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=64,
    conv_dim=(16,) * 7,
    num_conv_pos_embeddings=16,
    num_conv_pos_embedding_groups=4,
)


@pytest.mark.parametrize("samples", [400, 719, 720, 16000, 48000, 50017])
@pytest.mark.parametrize("kind", ["mfcc", "logmel", "chroma", "cqt"])
def test_targets_have_one_frame_per_encoder_frame(samples, kind):
    frames = frame_features(torch.randn(samples), kind)
    expected = int(conv_output_lengths(torch.tensor([samples]), demo_config())[-1][0])
    assert frames.shape[0] == expected
    assert torch.isfinite(frames).all()


@pytest.mark.parametrize("offset", [0, 250, 380])
def test_target_frame_sees_the_same_samples_as_the_encoder_frame(offset):
    """A click at sample 3200 + offset lies in the windows of encoder frames 10 and, past 320,
    9; it must change exactly those target frames."""
    gen = torch.Generator().manual_seed(0)
    wave = 1e-4 * torch.randn(16000, generator=gen)
    click = wave.clone()
    click[3200 + offset : 3200 + offset + 16] += 1.0
    changed = (frame_features(click) - frame_features(wave))[:, :13].abs().sum(1) > 1e-3
    frames = {t for t in range(len(changed)) if 320 * t <= 3200 + offset < 320 * t + 400}
    assert set(torch.nonzero(changed).flatten().tolist()) == frames


@pytest.mark.parametrize("midi", [45, 48, 57, 61, 70, 83])
def test_chroma_peaks_at_the_notes_pitch_class(midi):
    """Harmonic tones from A2 (110 Hz) up: every frame's strongest class is the note's."""
    t = torch.arange(16000) / 16000
    f0 = 440.0 * 2 ** ((midi - 69) / 12)
    wave = sum(torch.sin(2 * torch.pi * k * f0 * t) / k for k in range(1, 6))
    chroma = frame_features(wave, "chroma")[:, -12:]
    assert (chroma.argmax(1) == (midi - 69) % 12).all()
    assert (chroma.max(1).values == 0).all()  # relative to the strongest class


@pytest.mark.parametrize("midi", [36, 45, 57, 61, 70, 83, 100])
def test_semitone_spectrum_peaks_at_the_notes_key(midi):
    """Harmonic tones from C2 (65 Hz) up: octave and pitch, not only the pitch class."""
    t = torch.arange(16000) / 16000
    f0 = 440.0 * 2 ** ((midi - 69) / 12)
    wave = sum(torch.sin(2 * torch.pi * k * f0 * t) / k for k in range(1, 6))
    frames = len(frame_features(wave, "logmel"))
    spectrum = semitone_spectrum(wave, frames)
    assert spectrum.shape == (frames, len(SEMITONES)) and torch.isfinite(spectrum).all()
    assert (spectrum[5:-5].argmax(1) == midi - SEMITONES[0]).all()


def test_kmeans_finds_separated_clusters():
    gen = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    x = torch.cat([c + 0.3 * torch.randn(200, 2, generator=gen) for c in centres])
    found = kmeans(x, 3, seed=1)
    assert torch.cdist(centres, found).min(1).values.max() < 0.3


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    rng = np.random.default_rng(0)
    t = np.arange(16000 * 2) / 16000
    for i in range(8):
        f = [220.0, 660.0][i % 2]
        x = 0.4 * np.sin(2 * np.pi * f * t) * (np.sin(2 * np.pi * 2 * t) > 0)
        sf.write(root / f"{i}.wav", x + 0.01 * rng.standard_normal(len(t)), 16000)
    return root


def test_short_pretraining_learns_and_exports_a_loadable_checkpoint(corpus, tmp_path):
    s = PretrainSettings(
        "music",
        seed=3,
        features="logmel",
        clusters=4,
        steps=40,
        batch_size=4,
        crop_seconds=1.0,
        lr=3e-3,
        architecture=TINY,
    )
    summary = pretrain(corpus, tmp_path / "enc", s, progress=False)
    losses = [row["loss"] for row in summary_rows(tmp_path / "enc")]
    assert len(losses) == 40
    assert np.mean(losses[-10:]) < 0.8 * np.mean(losses[:10])
    enc = load_encoder(tmp_path / "enc")
    assert next(enc.model.parameters()).dtype == torch.float32
    assert enc.config.hidden_size == 32 and enc.sample_rate == 16000
    card = (tmp_path / "enc" / "README.md").read_text()
    assert "40 steps" in card and "loss.png" in card
    assert (tmp_path / "enc" / "loss.png").stat().st_size > 1000
    assert json.loads((tmp_path / "enc" / "training.json").read_text())["steps"] == 40
    assert summary["final_loss"] == pytest.approx(np.mean(losses[-50:]))
    assert "CPU thread(s)" in card
    summary["settings"]["accelerator"] = "gpu"  # a card says where the steps ran
    write_card(summary, tmp_path / "enc")
    card = (tmp_path / "enc" / "README.md").read_text()
    assert "gpu" in card and "CPU thread" not in card


def test_spectral_reconstruction_loss_is_learned_and_carded(corpus, tmp_path):
    s = PretrainSettings(
        "music",
        seed=3,
        features="logmel",
        clusters=4,
        steps=30,
        batch_size=4,
        crop_seconds=1.0,
        lr=3e-3,
        architecture=TINY,
        reconstruct=1.0,
    )
    pretrain(corpus, tmp_path / "enc", s, progress=False)
    recon = [row["reconstruction_loss"] for row in summary_rows(tmp_path / "enc")]
    assert recon[0] > 0.5  # standardised targets: an untrained regression is off by ~1
    assert np.mean(recon[-10:]) < 0.9 * np.mean(recon[:10])  # the regression head trains
    assert "CQT reconstruction" in (tmp_path / "enc" / "README.md").read_text()
    assert load_encoder(tmp_path / "enc").config.hidden_size == 32  # the head is not exported


def summary_rows(directory):
    import csv

    with open(directory / "loss.csv") as f:
        return [{k: float(v) for k, v in r.items()} for r in csv.DictReader(f)]
