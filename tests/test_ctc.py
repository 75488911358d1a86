import random

import numpy as np
import pytest
import soundfile as sf
import torch
from omegaconf import OmegaConf

from eval.ctc import Vocabulary, fit_ctc, frame_features, train_subset, wer, word_errors
from eval.data import Example
from eval.evaluate import build_suite
from eval.features import FbankUpstream
from eval.probing import probe_task
from merging.audio import read_audio

RATE = 16000
TONES = {"A": 300.0, "B": 900.0, "C": 2400.0}  # each letter a tone; words apart by silence


def speak(text: str, rng: np.random.Generator) -> np.ndarray:
    parts = [np.zeros(int(0.1 * RATE))]
    for word in text.split():
        for letter in word:
            t = np.arange(int(rng.uniform(0.12, 0.18) * RATE)) / RATE
            parts.append(0.4 * np.sin(2 * np.pi * TONES[letter] * t))
        parts.append(np.zeros(int(rng.uniform(0.12, 0.2) * RATE)))
    wave = np.concatenate(parts)
    return (wave + 0.003 * rng.standard_normal(wave.size)).astype(np.float32)


def random_text(rng: random.Random) -> str:
    words = []
    for _ in range(rng.randint(1, 3)):
        word = rng.choice("ABC")
        for _ in range(rng.randint(0, 2)):  # no letter twice in a row: a tone has no seams
            word += rng.choice([c for c in "ABC" if c != word[-1]])
        words.append(word)
    return " ".join(words)


@pytest.fixture(scope="module")
def librispeech_layout(tmp_path_factory):
    """Tone 'speech' in LibriSpeech's layout: subset/speaker/chapter/*.flac + *.trans.txt."""
    root = tmp_path_factory.mktemp("librispeech")
    rng, text_rng = np.random.default_rng(0), random.Random(0)
    for subset, count in (("train-clean-100", 64), ("dev-clean", 12), ("test-clean", 24)):
        chapter = root / subset / "19" / "198"
        chapter.mkdir(parents=True)
        lines = []
        for i in range(count):
            text = random_text(text_rng)
            sf.write(chapter / f"19-198-{i:04d}.flac", speak(text, rng), RATE)
            lines.append(f"19-198-{i:04d} {text}")
        (chapter / "19-198.trans.txt").write_text("\n".join(lines) + "\n")
    return root


def test_word_error_rate():
    assert word_errors("A B C", "A X C D") == (2, 3)
    assert word_errors("A B", "") == (2, 2)
    assert wer(["a b c", "d e"], ["a b c", "d"]) == pytest.approx(1 / 5)


def test_vocabulary_round_trip_and_greedy_collapse():
    vocab = Vocabulary(["hello world", "abc"])
    assert vocab.symbols[0] == "<blank>" and "|" in vocab.symbols
    ids = vocab.encode("Hello  World").tolist()
    assert vocab.decode_greedy(ids) == "HELO WORLD"  # LL collapses without a blank between
    a, space, b = vocab.index["A"], vocab.index["|"], vocab.index["B"]
    assert vocab.decode_greedy([0, a, a, 0, a, space, space, b, 0]) == "AA B"
    assert vocab.encode("row?").tolist() == [vocab.index[c] for c in "ROW"]  # ? unseen: dropped


def test_train_subset_caps_the_training_split_only(tmp_path):
    rows = []
    for i in range(10):
        path = tmp_path / f"{i}.wav"
        sf.write(path, np.zeros(RATE, np.float32), RATE)  # 1 s each
        rows.append(Example(str(path), "A", "train" if i < 8 else "test"))
    kept = train_subset(rows, 3.5 / 3600)
    assert sum(r.split == "train" for r in kept) == 3
    assert sum(r.split == "test" for r in kept) == 2
    assert kept == train_subset(rows, 3.5 / 3600)  # seeded
    assert train_subset(rows, None) == rows


def test_ctc_probe_transcribes_and_does_not_memorise(librispeech_layout, tmp_path):
    cfg = OmegaConf.load("conf/eval/paper.yaml")
    cfg.roots.asr_wer = str(librispeech_layout)
    # FBANK frames know no context, and a word gap differs from the leading silence only in
    # context: the BiLSTM head supplies it
    cfg.ctc.epochs, cfg.ctc.lrs, cfg.ctc.hidden = 15, [0.003, 0.01], 24
    ((task, rows),) = build_suite(cfg)
    assert task.kind == "ctc" and len(rows) == 100
    fbank = FbankUpstream(RATE, delta_order=0, cmvn=False)  # plain log-mel frames
    first = probe_task(fbank, task, rows, cfg, tmp_path, progress=False)
    assert first["metric"] == "wer" and first["clips"] == 100
    assert first["value"] < 15.0, first["transcripts"]
    again = probe_task(fbank, task, rows, cfg, tmp_path, progress=False)
    assert again["probe_cached"] and again["value"] == first["value"]

    # the same audio with every training transcript swapped for another one's
    shuffled = [r.label for r in rows if r.split == "train"]
    random.Random(1).shuffle(shuffled)
    it = iter(shuffled)
    noise = [Example(r.path, next(it) if r.split == "train" else r.label, r.split) for r in rows]
    feats = frame_features(fbank, noise, tmp_path, task.max_seconds, progress=False)
    assert feats.cached  # same files and upstream as above: the frames come from the cache
    result = fit_ctc(feats, [0.01], hidden=24, epochs=15, batch_size=8)
    assert result.test_wer > 0.6


def test_ctc_from_the_on_disk_store_equals_ctc_from_frames_in_memory(
    librispeech_layout, tmp_path, caplog
):
    """The store holds exactly the frames (float16, as they were kept in memory before), so
    the probe's WER is the same; it costs layers x dim x 2 bytes per frame on disk; a store
    cut short is named, removed and built again."""
    import dataclasses
    import logging

    cfg = OmegaConf.load("conf/eval/paper.yaml")
    cfg.roots.asr_wer = str(librispeech_layout)
    ((task, rows),) = build_suite(cfg)
    fbank = FbankUpstream(RATE, delta_order=0, cmvn=False)
    feats = frame_features(fbank, rows, tmp_path, task.max_seconds, progress=False)
    in_memory = [f.clone() for f in feats.frames]
    direct = [  # each clip alone, straight from the upstream
        torch.stack(fbank.layers(w[None], torch.tensor([len(w)]))[0], 1)[0].half()
        for w in (
            torch.from_numpy(read_audio(e.path, RATE, task.max_seconds)) for e in feats.examples
        )
    ]
    assert all(torch.equal(a, b) for a, b in zip(in_memory, direct, strict=True))
    (store,) = (tmp_path / "features").iterdir()
    shards = sum(p.stat().st_size for p in store.glob("shard-*"))
    assert shards == sum(f.numel() * 2 for f in in_memory)

    from_store = fit_ctc(feats, [0.01], hidden=0, epochs=3, batch_size=8)
    from_memory = fit_ctc(
        dataclasses.replace(feats, frames=in_memory), [0.01], hidden=0, epochs=3, batch_size=8
    )
    assert from_store.test_errors == from_memory.test_errors
    assert from_store.test_wer == from_memory.test_wer

    shard = next(store.glob("shard-*"))
    shard.write_bytes(shard.read_bytes()[:100])
    with caplog.at_level(logging.WARNING):
        again = frame_features(fbank, rows, tmp_path, task.max_seconds, progress=False)
    assert f"damaged cache entry {store}" in caplog.text and not again.cached
    assert all(torch.equal(a, b) for a, b in zip(again.frames, in_memory, strict=True))
