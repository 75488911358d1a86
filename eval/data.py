"""Labelled audio datasets as plain lists of examples, with deterministic splits.

An adapter turns a dataset's own layout into ``Example`` rows; everything downstream (feature
extraction, probes) sees only those rows.
"""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass
from pathlib import Path

from merging.audio import AUDIO_SUFFIXES, AudioError

SPLITS = ("train", "valid", "test")


@dataclass(frozen=True)
class Example:
    path: str
    label: str
    split: str  # train / valid / test, or "fold<k>" for k-fold tasks


def hash_split(key: str, valid: float = 0.1, test: float = 0.2) -> str:
    """A split that depends only on ``key`` (the file's path inside the dataset)."""
    u = int(hashlib.sha1(key.encode()).hexdigest()[:8], 16) / 0x100000000
    return "test" if u < test else "valid" if u < test + valid else "train"


def labelled_folder(root: str | Path, valid: float = 0.1, test: float = 0.2) -> list[Example]:
    """One sub-folder per class; splits from a hash of each file's path below ``root``."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise AudioError(f"dataset folder {str(root)!r} does not exist")
    rows, seen = [], {}
    for cls in sorted(p for p in root.iterdir() if p.is_dir()):
        for f in sorted(cls.rglob("*")):
            if f.suffix.lower() in AUDIO_SUFFIXES and f.is_file():
                real = f.resolve()
                if real in seen:  # e.g. a class folder that links to the dataset's root
                    raise AudioError(
                        f"{f} is the same file as {seen[real]}: a clip can have one label only "
                        "(is a class folder a symlink to another folder?)"
                    )
                seen[real] = f
                rel = f.relative_to(root).as_posix()
                rows.append(Example(str(f), cls.name, hash_split(rel, valid, test)))
    if not rows:
        raise AudioError(f"{root} holds no class sub-folders with audio files")
    return rows


def csv_manifest(path: str | Path, valid: float = 0.1, test: float = 0.2) -> list[Example]:
    """Columns ``path,label[,split]``; relative paths are relative to the manifest."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise AudioError(f"manifest {str(path)!r} does not exist")
    rows = []
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if not {"path", "label"} <= set(reader.fieldnames or []):
            raise AudioError(f"{path} needs the columns path,label (and optionally split)")
        for r in reader:
            audio = Path(r["path"])
            audio = audio if audio.is_absolute() else path.parent / audio
            split = (r.get("split") or "").strip() or hash_split(r["path"], valid, test)
            rows.append(Example(str(audio), r["label"], split))
    if not rows:
        raise AudioError(f"{path} lists no files")
    return rows
