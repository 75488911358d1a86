"""Each adapter on a tiny fixture written in that benchmark's exact layout."""

import json
from collections import Counter

import numpy as np
import pytest
import soundfile as sf

from eval import datasets
from eval.scores import PAPER_MUSIC, PAPER_SPEECH
from eval.tasks import KINDS, PAPER_TASKS
from merging.audio import AudioError


def wav(path, seconds=0.1, rate=16000):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, (0.1 * np.sin(np.arange(int(seconds * rate)) / 5)).astype(np.float32), rate)
    return path


def test_registry_covers_the_paper_columns():
    assert tuple(n for n, t in PAPER_TASKS.items() if t.domain == "speech") == PAPER_SPEECH
    assert tuple(n for n, t in PAPER_TASKS.items() if t.domain == "music") == PAPER_MUSIC
    assert all(t.kind in KINDS for t in PAPER_TASKS.values())
    assert not PAPER_TASKS["asr_wer"].higher_is_better and PAPER_TASKS["ks"].higher_is_better


def test_speech_commands_with_and_without_the_separate_test_set(tmp_path):
    root, test = tmp_path / "sc", tmp_path / "sc_test"
    for rel in ("yes/a.wav", "yes/b.wav", "no/c.wav", "bed/d.wav", "_background_noise_/n.wav"):
        wav(root / rel)
    (root / "validation_list.txt").write_text("yes/b.wav\n")
    (root / "testing_list.txt").write_text("no/c.wav\n")
    rows = {r.path.split("sc/")[-1]: r for r in datasets.speech_commands(root)}
    assert (rows["yes/b.wav"].split, rows["no/c.wav"].split, rows["yes/a.wav"].split) == (
        "valid",
        "test",
        "train",
    )
    assert rows["bed/d.wav"].label == "_unknown_"
    assert rows["_background_noise_/n.wav"].label == "_silence_"
    for rel in ("yes/t1.wav", "_unknown_/t2.wav", "_silence_/t3.wav"):
        wav(test / rel)
    rows = datasets.speech_commands(root, test)
    tests = sorted(r.label for r in rows if r.split == "test")
    assert tests == ["_silence_", "_unknown_", "yes"]
    with pytest.raises(AudioError, match="validation_list.txt is missing"):
        datasets.speech_commands(tmp_path)


def test_fluent_speech_commands(tmp_path):
    root = tmp_path / "fsc"
    (root / "data").mkdir(parents=True)
    for split in ("train", "valid", "test"):
        (root / "data" / f"{split}_data.csv").write_text(
            ",path,speakerId,transcription,action,object,location\n"
            f"0,wavs/speakers/s1/{split}.wav,s1,Turn on the lights,activate,lights,none\n"
        )
    rows = datasets.fluent_speech_commands(root)
    assert [r.split for r in rows] == ["train", "valid", "test"]
    assert rows[0].label == "activate|lights|none"
    assert rows[0].path == str(root / "wavs/speakers/s1/train.wav")


def test_voxceleb1_identification(tmp_path):
    root = tmp_path / "vox1"
    root.mkdir()
    (root / "iden_split.txt").write_text(
        "1 id10001/1zcIwhmdeo4/00001.wav\n"
        "2 id10001/1zcIwhmdeo4/00002.wav\n"
        "3 id10002/xyz/00001.wav\n"
    )
    rows = datasets.voxceleb1_identification(root)
    assert [(r.label, r.split) for r in rows] == [
        ("id10001", "train"),
        ("id10001", "valid"),
        ("id10002", "test"),
    ]
    assert rows[2].path == str(root / "wav/id10002/xyz/00001.wav")
    # s3prl's layout: dev/wav and test/wav
    (root / "dev/wav/id10001").mkdir(parents=True)
    (root / "test/wav/id10002").mkdir(parents=True)
    rows = datasets.voxceleb1_identification(root)
    assert rows[0].path == str(root / "dev/wav/id10001/1zcIwhmdeo4/00001.wav")
    assert rows[2].path == str(root / "test/wav/id10002/xyz/00001.wav")


def test_iemocap_four_classes_and_session_folds(tmp_path):
    root = tmp_path / "IEMOCAP"
    for s in (1, 2):
        ev = root / f"Session{s}" / "dialog" / "EmoEvaluation"
        ev.mkdir(parents=True)
        (ev / f"Ses0{s}F_impro01.txt").write_text(
            "% header\n"
            f"[6.2 - 8.2]\tSes0{s}F_impro01_F000\tneu\t[2.5, 2.5, 2.5]\n"
            f"[8.2 - 9.9]\tSes0{s}F_impro01_F001\texc\t[3.5, 3.5, 3.0]\n"
            f"[9.9 - 11.0]\tSes0{s}F_impro01_M000\tfru\t[2.0, 3.5, 3.0]\n"
        )
    rows = datasets.iemocap(root)
    assert Counter(r.split for r in rows) == {"fold1": 2, "fold2": 2}
    assert [r.label for r in rows[:2]] == ["neu", "hap"]  # exc merged into hap, fru dropped
    assert rows[0].path.endswith("Session1/sentences/wav/Ses01F_impro01/Ses01F_impro01_F000.wav")


def test_librispeech_transcripts(tmp_path):
    root = tmp_path / "LibriSpeech"
    for subset in ("train-clean-100", "dev-clean", "test-clean"):
        d = root / subset / "19" / "198"
        d.mkdir(parents=True)
        (d / "19-198.trans.txt").write_text(
            "19-198-0000 NORTHANGER ABBEY\n19-198-0001 CHAPTER ONE\n"
        )
    rows = datasets.librispeech(root)
    assert len(rows) == 6 and rows[1].label == "CHAPTER ONE"
    assert rows[0].path == str(root / "train-clean-100/19/198/19-198-0000.flac")
    assert {r.split for r in rows} == {"train", "valid", "test"}


def test_vocalset_singer_and_technique_from_file_names(tmp_path):
    root = tmp_path / "VocalSet"
    wav(root / "FULL/f1/arpeggios/belt/f1_arpeggios_belt_c_a.wav")
    wav(root / "FULL/m3/scales/vibrato/m3_scales_vibrato_e.wav")
    wav(root / "FULL/m3/notes.wav")  # not a VocalSet take: ignored
    singers = datasets.vocalset(root, "singer")
    techniques = datasets.vocalset(root, "technique")
    assert sorted(r.label for r in singers) == ["f1", "m3"]
    assert sorted(r.label for r in techniques) == ["belt", "vibrato"]
    with pytest.raises(ValueError, match="singer or technique"):
        datasets.vocalset(root, "gender")


def test_nsynth_family_and_pitch(tmp_path):
    root = tmp_path / "nsynth"
    for split in ("train", "valid", "test"):
        sub = root / f"nsynth-{split}"
        (sub / "audio").mkdir(parents=True)
        (sub / "examples.json").write_text(
            json.dumps(
                {
                    "guitar_acoustic_001-060-050": {
                        "instrument_family_str": "guitar",
                        "pitch": 60,
                    },
                    "bass_synthetic_009-045-100": {"instrument_family_str": "bass", "pitch": 45},
                }
            )
        )
    fam = datasets.nsynth(root)
    pitch = datasets.nsynth(root, "pitch")
    assert [r.label for r in fam[:2]] == ["bass", "guitar"]
    assert [r.label for r in pitch[:2]] == ["45", "60"]
    assert fam[0].path == str(root / "nsynth-train/audio/bass_synthetic_009-045-100.wav")


def test_gtzan_uses_split_lists_when_present(tmp_path):
    root = tmp_path / "gtzan"
    for rel in (
        "blues/blues.00000.wav",
        "blues/blues.00001.wav",
        "rock/rock.00000.wav",
        "rock/rock.00099.wav",
    ):
        wav(root / "genres" / rel)
    hashed = datasets.gtzan(root)
    assert len(hashed) == 4 and {r.label for r in hashed} == {"blues", "rock"}
    (root / "train_filtered.txt").write_text("blues/blues.00000.wav\nrock/rock.00000.wav\n")
    (root / "valid_filtered.txt").write_text("blues/blues.00001.wav\n")
    (root / "test_filtered.txt").write_text("")
    listed = datasets.gtzan(root)
    assert [(r.label, r.split) for r in listed] == [
        ("blues", "train"),
        ("blues", "valid"),
        ("rock", "train"),
    ]


def test_esc50_folds(tmp_path):
    root = tmp_path / "ESC-50"
    (root / "meta").mkdir(parents=True)
    (root / "meta" / "esc50.csv").write_text(
        "filename,fold,target,category,esc10,src_file,take\n"
        "1-100032-A-0.wav,1,0,dog,True,100032,A\n5-9032-A-0.wav,5,0,dog,True,9032,A\n"
        "2-109505-A-21.wav,2,21,sneezing,False,109505,A\n"
    )
    rows = datasets.esc50(root)
    assert [(r.label, r.split) for r in rows] == [
        ("dog", "fold1"),
        ("dog", "fold5"),
        ("sneezing", "fold2"),
    ]
    assert rows[0].path == str(root / "audio/1-100032-A-0.wav")
