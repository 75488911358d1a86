"""Adapters for the real benchmark layouts (as distributed), each returning ``Example`` rows.

Splits follow each benchmark's own lists where it ships them; k-fold tasks name their folds
``fold<k>``. Labels are the task's targets (a transcript for LibriSpeech).
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

from eval.data import Example, hash_split
from merging.audio import AudioError

SPEECH_COMMANDS_WORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
IEMOCAP_CLASSES = {"neu": "neu", "hap": "hap", "exc": "hap", "ang": "ang", "sad": "sad"}


def _root(root: str | Path, *must: str) -> Path:
    root = Path(root).expanduser()
    for name in must:
        if not (root / name).exists():
            raise AudioError(f"{root} does not look like the expected layout: {name} is missing")
    return root


def _nonempty(rows: list[Example], root: Path) -> list[Example]:
    if not rows:
        raise AudioError(f"no usable examples found under {root}")
    return rows


def speech_commands(root: str | Path, test_root: str | Path | None = None) -> list[Example]:
    """Speech Commands v0.01 with SUPERB's 12 classes (10 words, _unknown_, _silence_).

    Train/valid from ``validation_list.txt`` and ``testing_list.txt``; the test split is the
    separate v0.01 test set when ``test_root`` is given (as in SUPERB), else the testing list.
    """
    root = _root(root, "validation_list.txt", "testing_list.txt")
    valid = set((root / "validation_list.txt").read_text().split())
    test = set((root / "testing_list.txt").read_text().split())
    rows = []
    for wav in sorted(root.glob("*/*.wav")):
        rel = wav.relative_to(root).as_posix()
        word = wav.parent.name
        if word == "_background_noise_":
            rows.append(Example(str(wav), "_silence_", "train"))
            continue
        label = word if word in SPEECH_COMMANDS_WORDS else "_unknown_"
        split = "valid" if rel in valid else "test" if rel in test else "train"
        if test_root is not None and split == "test":
            continue
        rows.append(Example(str(wav), label, split))
    if test_root is not None:
        test_dir = _root(test_root)
        for wav in sorted(test_dir.glob("*/*.wav")):
            rows.append(Example(str(wav), wav.parent.name, "test"))
    return _nonempty(rows, root)


def fluent_speech_commands(root: str | Path) -> list[Example]:
    """Fluent Speech Commands: intent = action + object + location (``data/*_data.csv``)."""
    root = _root(root, "data")
    rows = []
    for split in ("train", "valid", "test"):
        with open(root / "data" / f"{split}_data.csv", newline="") as f:
            for r in csv.DictReader(f):
                intent = f"{r['action']}|{r['object']}|{r['location']}"
                rows.append(Example(str(root / r["path"]), intent, split))
    return _nonempty(rows, root)


def voxceleb1_identification(root: str | Path) -> list[Example]:
    """VoxCeleb1 identification (``iden_split.txt``: 1 train, 2 valid, 3 test).

    Audio under ``wav/`` or, as s3prl lays it out, under ``dev/wav/`` and ``test/wav/``.
    """
    root = _root(root, "iden_split.txt")
    names = {"1": "train", "2": "valid", "3": "test"}
    wav_dirs = [root / "wav", root / "dev/wav", root / "test/wav"]
    speaker_dir: dict[str, Path] = {}
    rows = []
    for line in (root / "iden_split.txt").read_text().splitlines():
        if line.strip():
            code, rel = line.split()
            speaker = rel.split("/")[0]
            if speaker not in speaker_dir:
                found = [d for d in wav_dirs if (d / speaker).is_dir()]
                speaker_dir[speaker] = found[0] if found else wav_dirs[0]
            rows.append(Example(str(speaker_dir[speaker] / rel), speaker, names[code]))
    return _nonempty(rows, root)


def iemocap(root: str | Path) -> list[Example]:
    """IEMOCAP, 4 classes (excited merged into happy), one fold per session."""
    root = _root(root)
    line = re.compile(r"^\[[^\]]+\]\s+(\S+)\s+(\w+)\s+\[")
    rows = []
    for session in range(1, 6):
        sdir = root / f"Session{session}"
        for ev in sorted((sdir / "dialog" / "EmoEvaluation").glob("*.txt")):
            for text in ev.read_text().splitlines():
                m = line.match(text)
                if m and m.group(2) in IEMOCAP_CLASSES:
                    utt = m.group(1)
                    dialog = utt.rsplit("_", 1)[0]
                    wav = sdir / "sentences" / "wav" / dialog / f"{utt}.wav"
                    rows.append(Example(str(wav), IEMOCAP_CLASSES[m.group(2)], f"fold{session}"))
    return _nonempty(rows, root)


def librispeech(
    root: str | Path,
    train: str = "train-clean-100",
    valid: str = "dev-clean",
    test: str = "test-clean",
) -> list[Example]:
    """LibriSpeech subsets; the label is the upper-case transcript."""
    root = _root(root)
    rows = []
    for split, subset in (("train", train), ("valid", valid), ("test", test)):
        for trans in sorted((root / subset).glob("*/*/*.trans.txt")):
            for text in trans.read_text().splitlines():
                utt, _, words = text.partition(" ")
                rows.append(Example(str(trans.parent / f"{utt}.flac"), words.strip(), split))
    return _nonempty(rows, root)


def vocalset(root: str | Path, target: str = "singer") -> list[Example]:
    """VocalSet: singer (f1..f9, m1..m11) or technique, read from the file names."""
    if target not in ("singer", "technique"):
        raise ValueError(f"vocalset target must be singer or technique, got {target!r}")
    root = _root(root)
    rows = []
    for wav in sorted(root.rglob("*.wav")):
        parts = wav.stem.split("_")
        if len(parts) < 3 or not re.fullmatch(r"[fm]\d+", parts[0]):
            continue
        label = parts[0] if target == "singer" else wav.parent.name
        rows.append(Example(str(wav), label, hash_split(wav.relative_to(root).as_posix())))
    return _nonempty(rows, root)


def nsynth(root: str | Path, target: str = "instrument_family") -> list[Example]:
    """NSynth ``nsynth-{train,valid,test}/examples.json``: instrument family or pitch."""
    if target not in ("instrument_family", "pitch"):
        raise ValueError(f"nsynth target must be instrument_family or pitch, got {target!r}")
    root = _root(root)
    rows = []
    for split in ("train", "valid", "test"):
        sub = root / f"nsynth-{split}"
        meta = json.loads((sub / "examples.json").read_text())
        for note, info in sorted(meta.items()):
            label = (
                info["instrument_family_str"]
                if target == "instrument_family"
                else str(info["pitch"])
            )
            rows.append(Example(str(sub / "audio" / f"{note}.wav"), label, split))
    return _nonempty(rows, root)


def gtzan(root: str | Path) -> list[Example]:
    """GTZAN ``genres/<genre>/*.wav``; split lists (``train_filtered.txt`` etc.) if present."""
    root = _root(root, "genres")
    lists = {
        "train": root / "train_filtered.txt",
        "valid": root / "valid_filtered.txt",
        "test": root / "test_filtered.txt",
    }
    listed: dict[str, str] = {}
    if all(p.is_file() for p in lists.values()):
        for split, p in lists.items():
            listed.update({rel.strip(): split for rel in p.read_text().splitlines() if rel.strip()})
    rows = []
    for wav in sorted((root / "genres").glob("*/*.wav")):
        rel = wav.relative_to(root / "genres").as_posix()
        if listed and rel not in listed:
            continue  # the filtered lists leave out GTZAN's known duplicates
        rows.append(Example(str(wav), wav.parent.name, listed.get(rel) or hash_split(rel)))
    return _nonempty(rows, root)


def esc50(root: str | Path) -> list[Example]:
    """ESC-50 (``meta/esc50.csv``), five folds."""
    root = _root(root, "meta/esc50.csv")
    rows = []
    with open(root / "meta" / "esc50.csv", newline="") as f:
        for r in csv.DictReader(f):
            rows.append(
                Example(str(root / "audio" / r["filename"]), r["category"], f"fold{r['fold']}")
            )
    return _nonempty(rows, root)
