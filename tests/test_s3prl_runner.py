"""s3prl for real (``make test-s3prl``, after ``make s3prl``): its own runner on a merged
checkpoint of this project's, and its FBANK against the project's."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from eval.features import FbankUpstream
from tests.helpers import local_job, random_encoder, run_py, tiny_config

pytestmark = pytest.mark.s3prl
RATE = 16000
WORDS = {"yes": 300.0, "no": 500.0, "up": 800.0, "bed": 1200.0}  # bed: one of the unknowns


def write_speech_commands(root: Path, per_word: int = 12, test_per_class: int = 3) -> Path:
    """Speech Commands v0.01's layout (word folders of SPEAKER_nohash_K.wav, background noise,
    testing_list.txt; and the separate test set with _unknown_ and _silence_), a tone a word."""
    rng = np.random.default_rng(0)

    def write(path: Path, wave: np.ndarray) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, wave.astype(np.float32), RATE)

    def tone(f: float) -> np.ndarray:
        t = np.arange(RATE) / RATE
        return 0.3 * np.sin(2 * np.pi * f * t) + 0.05 * rng.standard_normal(t.size)

    listed = []  # the archive's testing_list.txt: the last clips of every word
    for word, f in WORDS.items():
        for s in range(per_word):
            name = f"{word}/{s:08x}_nohash_0.wav"
            write(root / "train" / name, tone(f * rng.uniform(0.97, 1.03)))
            listed += [name] if s >= per_word - test_per_class else []
        label = "_unknown_" if word == "bed" else word
        for s in range(test_per_class):
            write(root / "test" / label / f"t{s}_nohash_0.wav", tone(f))
    write(root / "train" / "_background_noise_" / "noise.wav", 0.1 * rng.standard_normal(3 * RATE))
    for s in range(test_per_class):
        write(root / "test" / "_silence_" / f"s{s}.wav", 0.1 * rng.standard_normal(RATE))
    (root / "train" / "testing_list.txt").write_text("\n".join(listed) + "\n")
    (root / "train" / "validation_list.txt").write_text("")
    return root


def s3prl_sized_config():
    """Tiny, but with HuBERT's 320-sample frame stride, which s3prl's featurizer assumes."""
    return tiny_config(
        conv_dim=(16,) * 7, conv_kernel=(10, 3, 3, 3, 3, 2, 2), conv_stride=(5,) + (2,) * 6
    )


def test_s3prl_runs_its_own_speech_commands_recipe_on_the_merged_checkpoint(tmp_path):
    from merging.merge import export
    from tests.test_audio import write_mixed_folder

    export(random_encoder(s3prl_sized_config(), 0), tmp_path / "A")
    export(random_encoder(s3prl_sized_config(), 1), tmp_path / "B")
    write_mixed_folder(tmp_path / "calib")
    data = write_speech_commands(tmp_path / "speech_commands")
    out = tmp_path / "job"
    steps = "{total_steps:6,eval_step:3,save_step:3,log_step:3}"
    done = run_py(
        *local_job(
            tmp_path,
            out,
            "permute=fnn_attn",
            "eval=paper",
            "eval.backend=s3prl",
            f"eval.roots.ks={data / 'train'}",  # no separate test set: its testing list
            f"eval.s3prl.config={{runner:{steps},downstream_expert:{{datarc:{{num_workers:0}}}}}}",
        )
    )
    record = json.loads((out / "results.json").read_text())
    assert record["status"] == "ok", record.get("traceback") or done.stderr[-3000:]
    evaluation = record["evaluation"]
    assert evaluation["runner"] == "package" and "testing list" in evaluation["notes"]["ks"]
    (run,) = evaluation["runs"].values()
    assert run["status"] == "ok", Path(run["log"]).read_text()[-3000:]
    log = Path(run["log"]).read_text()
    assert "hf_hubert_custom" in log and str((out / "merged").resolve()) in log
    ks = evaluation["tasks"]["ks"]
    assert ks["metric"] == "accuracy" and 0 <= ks["value"] <= 100 and ks["runs"] == 1
    accuracy = float(log.rsplit("test acc: ", 1)[1].split()[0])  # what s3prl printed last
    assert ks["value"] == pytest.approx(100 * accuracy)
    experiment = Path(run["dir"])
    assert (experiment / "dev-best.ckpt").is_file() and list(experiment.glob("states-*.ckpt"))
    assert (out / "s3prl.sh").read_text().count("eval.s3prl.launch") == 2


@pytest.mark.parametrize("delta_order, cmvn", [(0, False), (2, True)])
def test_fbank_matches_torchaudio_kaldi_fbank_with_s3prls_deltas_and_cmvn(delta_order, cmvn):
    """The project's FBANK is s3prl's: torchaudio's Kaldi fbank (80 bins, 25/10 ms), its
    ComputeDeltas (window 5) and per-clip CMVN, on clips of three lengths in one batch."""
    from torchaudio.compliance import kaldi
    from torchaudio.transforms import ComputeDeltas

    gen = torch.Generator().manual_seed(0)
    lengths = torch.tensor([RATE * 2, 12345, 881])
    t = torch.arange(int(lengths.max())) / RATE
    chirp = 0.3 * torch.sin(2 * torch.pi * 200 * t * (1 + 2 * t))
    wave = chirp + 0.05 * torch.randn(len(lengths), t.numel(), generator=gen)
    (ours,), frames = FbankUpstream(RATE, delta_order=delta_order, cmvn=cmvn).layers(wave, lengths)
    delta = ComputeDeltas(win_length=5)
    for i, n in enumerate(lengths.tolist()):
        feats = [kaldi.fbank(wave[i : i + 1, :n], num_mel_bins=80, sample_frequency=RATE)]
        for _ in range(delta_order):
            feats.append(delta(feats[-1].T[None])[0].T)
        ref = torch.cat(feats, 1)
        if cmvn:
            ref = (ref - ref.mean(0, keepdim=True)) / (1e-10 + ref.std(0, keepdim=True))
        assert int(frames[i]) == len(ref)
        assert (ours[i, : len(ref)] - ref).abs().max() < 1e-3  # float32 log energies
        assert not ours[i, len(ref) :].any()  # padding frames stay empty
