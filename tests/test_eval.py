import random

import numpy as np
import pytest
import soundfile as sf
import torch

from eval.data import Example, csv_manifest, hash_split, labelled_folder
from eval.evaluate import scores
from eval.features import EncoderUpstream, FbankUpstream, deltas, pooled_features
from eval.probe import clip_key, fit_kfold, fit_probe
from eval.tasks import Task
from merging.audio import AudioError
from tests.helpers import random_encoder, tiny_config

RATE = 16000
LOGMEL = FbankUpstream(RATE, delta_order=0, cmvn=False)  # a pooled spectrum that separates


def make_two_class_folder(root, per_class=60, seed=0):
    """Low hums vs bright noise bursts, in mixed formats and rates, plus one corrupt file."""
    rng = np.random.default_rng(seed)
    for cls in ("hum", "hiss"):
        (root / cls).mkdir(parents=True)
    for i in range(per_class):
        rate = (16000, 22050, 8000)[i % 3]
        t = np.arange(int(rate * rng.uniform(0.4, 0.8))) / rate
        hum = 0.4 * np.sin(2 * np.pi * rng.uniform(90, 180) * t) + 0.02 * rng.standard_normal(
            t.size
        )
        hiss = np.diff(rng.standard_normal(t.size + 1)) * 0.2
        ext = (".wav", ".flac", ".ogg")[i % 3]
        sf.write(root / "hum" / f"h{i:03d}{ext}", hum.astype(np.float32), rate)
        sf.write(root / "hiss" / f"s{i:03d}{ext}", hiss.astype(np.float32), rate)
    (root / "hum" / "corrupt.wav").write_bytes(b"RIFF....WAVEjunk")
    return root


@pytest.fixture(scope="module")
def two_class(tmp_path_factory):
    return make_two_class_folder(tmp_path_factory.mktemp("two_class"))


def test_hash_split_is_deterministic_and_roughly_proportional():
    splits = [hash_split(f"class/file{i}.wav") for i in range(2000)]
    assert splits == [hash_split(f"class/file{i}.wav") for i in range(2000)]
    assert 0.15 < splits.count("test") / 2000 < 0.25
    assert 0.06 < splits.count("valid") / 2000 < 0.14


def test_folder_and_manifest_adapters(tmp_path, two_class):
    rows = labelled_folder(two_class)
    assert {r.label for r in rows} == {"hum", "hiss"} and len(rows) == 121
    manifest = tmp_path / "m.csv"
    manifest.write_text(
        "path,label,split\n"
        + "\n".join(
            f"{r.path},{r.label},{'test' if i % 4 == 0 else ''}" for i, r in enumerate(rows[:8])
        )
    )
    listed = csv_manifest(manifest)
    assert [r.split for r in listed][::4] == ["test", "test"]
    assert all(r.split in ("train", "valid", "test") for r in listed)
    with pytest.raises(AudioError, match="does not exist"):
        labelled_folder(tmp_path / "missing")


def test_probe_separates_clear_classes_and_not_shuffled_labels(tmp_path, two_class):
    rows = labelled_folder(two_class)
    feats = pooled_features(LOGMEL, rows, tmp_path, progress=False)
    assert feats.skipped == [str(two_class / "hum" / "corrupt.wav")]
    result = fit_probe(feats)
    assert result.test_accuracy > 0.95
    assert abs(sum(result.layer_weights) - 1) < 1e-5

    rng = random.Random(0)
    labels = [e.label for e in feats.examples]
    rng.shuffle(labels)
    shuffled = type(feats)(
        feats.features,
        [Example(e.path, lab, e.split) for e, lab in zip(feats.examples, labels, strict=True)],
        [],
        0.0,
        False,
    )
    assert fit_probe(shuffled).test_accuracy < 0.75


def test_s3prl_fbank_is_normalised_per_clip_and_pools_to_nothing(tmp_path, two_class):
    rows = labelled_folder(two_class)[:10]
    fbank = FbankUpstream(RATE)
    wave = torch.randn(3, 8000) * torch.tensor([[0.1], [1.0], [3.0]])
    lengths = torch.tensor([8000, 5000, 2400])
    (frames,), counts = fbank.layers(wave, lengths)
    assert frames.shape[-1] == 240  # 80 bins, deltas, delta-deltas
    for i, n in enumerate(counts.tolist()):
        clip = frames[i, :n]
        assert clip.mean(0).abs().max() < 1e-4 and (clip.std(0) - 1).abs().max() < 1e-3
        assert (frames[i, n:] == 0).all()
        alone = fbank.layers(wave[i : i + 1, : lengths[i]], lengths[i : i + 1])[0][0][0]
        assert torch.allclose(alone, clip, atol=1e-4)  # padding enters neither deltas nor CMVN
    pooled = pooled_features(fbank, rows, tmp_path, progress=False).features
    assert pooled.abs().max() < 1e-4  # SUPERB's floor: nothing left once time-pooled
    plain = pooled_features(LOGMEL, rows, tmp_path, progress=False).features
    assert plain.shape[-1] == 80 and plain.std(0).min() > 0.01


def test_deltas_are_the_slope_of_a_ramp_and_zero_on_a_constant():
    ramp = torch.arange(10.0)[:, None] * torch.tensor([[2.0, -0.5]])
    d = deltas(ramp)
    assert torch.allclose(d[2:-2], torch.tensor([[2.0, -0.5]]).expand(6, 2))
    assert d[0, 0] < 2.0  # repeated edges flatten the ends
    assert (deltas(torch.ones(5, 3)) == 0).all()


def test_features_are_extracted_once_per_encoder_and_dataset(tmp_path, two_class):
    rows = labelled_folder(two_class)[:24]
    upstream = EncoderUpstream(random_encoder(tiny_config(), 0))
    first = pooled_features(upstream, rows, tmp_path, progress=False)
    second = pooled_features(upstream, rows, tmp_path, progress=False)
    assert (first.cached, second.cached) == (False, True)
    assert second.seconds < first.seconds
    assert first.features.shape == (24, tiny_config().num_hidden_layers + 1, 32)
    assert (first.features == second.features).all()
    other = EncoderUpstream(random_encoder(tiny_config(), 1))
    assert not pooled_features(other, rows, tmp_path, progress=False).cached


def test_pooled_features_do_not_depend_on_batching(tmp_path, two_class):
    rows = labelled_folder(two_class)[:10]
    upstream = EncoderUpstream(random_encoder(tiny_config(), 0))
    one = pooled_features(upstream, rows, None, batch_size=1, progress=False)
    many = pooled_features(upstream, rows, None, batch_size=5, progress=False)
    assert (one.features - many.features).abs().max() < 1e-4


def test_kfold_probe_holds_out_each_fold(tmp_path, two_class):
    from eval.probe import fit_kfold

    rows = labelled_folder(two_class)
    folded = [Example(r.path, r.label, f"fold{1 + i % 3}") for i, r in enumerate(rows)]
    feats = pooled_features(LOGMEL, folded, tmp_path, progress=False)
    (result,) = fit_kfold(feats, epochs=20)
    assert set(result["folds"]) == {"fold1", "fold2", "fold3"}
    assert result["mean"] > 0.9 and result["std"] < 0.1
    with pytest.raises(ValueError, match="fold<k>"):
        fit_kfold(pooled_features(LOGMEL, rows, tmp_path, progress=False))


def write_esc50(root, per_fold=4, seed=0):
    rng = np.random.default_rng(seed)
    (root / "meta").mkdir(parents=True)
    (root / "audio").mkdir()
    lines = ["filename,fold,target,category,esc10,src_file,take"]
    for fold in range(1, 6):
        for i in range(per_fold):
            cat = ("hum", "hiss")[i % 2]
            t = np.arange(8000) / RATE
            x = (
                0.4 * np.sin(2 * np.pi * rng.uniform(90, 180) * t)
                if cat == "hum"
                else 0.2 * np.diff(rng.standard_normal(t.size + 1))
            )
            name = f"{fold}-{i}-A-{i % 2}.wav"
            sf.write(root / "audio" / name, x.astype(np.float32), RATE)
            lines.append(f"{name},{fold},{i % 2},{cat},False,{i},A")
    (root / "meta" / "esc50.csv").write_text("\n".join(lines) + "\n")
    return root


def test_paper_suite_kfold_task_with_references_and_scores(tmp_path):
    from omegaconf import OmegaConf

    from eval.evaluate import evaluate

    esc = write_esc50(tmp_path / "ESC-50")
    cfg = OmegaConf.load("conf/eval/paper.yaml")
    cfg.roots.esc50 = str(esc)
    cfg.probe.epochs = 15
    a, b = random_encoder(tiny_config(), 0), random_encoder(tiny_config(), 1)
    out = evaluate(a, cfg, tmp_path / "cache", members={"a": a, "b": b}, progress=False)
    esc50 = out["tasks"]["esc50"]
    assert set(esc50["folds"]) == {f"fold{k}" for k in range(1, 6)}
    assert out["references"]["a"]["esc50"] == esc50["value"]  # same encoder, cached probe
    assert out["scores"]["music"] == pytest.approx(
        1000 * esc50["value"] / out["references"]["b"]["esc50"]
    )
    cfg.roots.asr_wer = str(tmp_path)  # not LibriSpeech's layout: said so, naming the folder
    with pytest.raises(AudioError, match=f"no usable examples found under {tmp_path}"):
        evaluate(a, cfg, None)


def test_a_floor_that_model_a_does_not_beat_is_dropped_with_a_note():
    suite = [
        (Task(n, n, "speech", "utterance", "accuracy", labelled_folder), []) for n in ("x", "y")
    ]
    ref_a, floor = {"x": 80.0, "y": 60.0}, {"x": 20.0, "y": 70.0}  # FBANK beats A on y
    out = scores({"x": 50.0, "y": 30.0}, suite, ref_a, {}, floor)
    assert out["speech"] == pytest.approx(1000 * ((50 - 20) / (80 - 20) + 30 / 60) / 2)
    assert "['y']" in out["speech_note"]


def test_kfold_validation_split_does_not_depend_on_where_the_dataset_lies(tmp_path):
    """The same dataset in two places gives the same k-fold numbers."""
    results, splits = [], []
    for place in ("here", "elsewhere/deeper"):
        root = tmp_path / place
        make_two_class_folder(root, per_class=12)
        rows = labelled_folder(root)
        rows = [Example(e.path, e.label, f"fold{i % 3 + 1}") for i, e in enumerate(rows)]
        enc = random_encoder(tiny_config(), 0)
        feats = pooled_features(EncoderUpstream(enc), rows, None, progress=False)
        results.append(fit_kfold(feats, lrs=[0.01], epochs=3)[0])
        splits.append([hash_split(clip_key(e), 0.1, 0.0) for e in rows])
    assert splits[0] == splits[1] and len(set(splits[0])) == 2
    assert results[0]["folds"] == results[1]["folds"]
