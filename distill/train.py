"""Distillation with Lightning: teachers frozen, the student and its heads trained on crops of
audio read from folders, checkpointed so that a killed run resumes where it stopped.

Every random draw of a step (the crops of its batch, the student's dropout) is a function of
the seed and the step's index, so a resumed run computes the steps an uninterrupted run would.
"""

from __future__ import annotations

import copy
import json
import math
import platform
import shutil
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from distill.student import Heads, distil_loss, student_from, target_layers
from merging.audio import AudioError, list_audio, read_audio
from merging.forward import encode, forward
from merging.load import Encoder, load_encoder
from merging.loader import planned_samples
from merging.merge import export
from report.tracking import wandb_mode
from report.training import write_history as write_curves

RESUME = ".resume"  # <out>.resume/: the Lightning checkpoints of a run in progress


@dataclass
class Teacher:
    name: str
    encoder: Encoder
    layers: list[int]  # the hidden states its heads regress
    dirs: list[str]  # its data


class CropBatches(IterableDataset):
    """Batches ``first``, ``first + 1``, ... of ``batch_size`` crops of ``samples`` samples.
    Crop ``i`` is drawn from (seed, i) alone: a file (of those long enough, by their headers)
    and an offset; a file that fails to decode is replaced by the next one in the list. Worker
    w of W builds batches w, w + W, ..., which the loader hands out in order: the batches do
    not depend on the number of workers, and a resumed run starts at its next batch."""

    def __init__(self, files: Sequence[str], lengths: Sequence[int], samples: int, rate: int,
                 seed: int, batch_size: int, first: int, batches: int):  # fmt: skip
        self.files, self.lengths = list(files), list(lengths)
        self.samples, self.rate, self.seed = samples, rate, seed
        self.batch_size, self.first, self.batches = batch_size, first, batches

    def crop(self, i: int) -> torch.Tensor:
        rng = np.random.default_rng([self.seed, i])
        first = int(rng.integers(len(self.files)))
        for k in range(len(self.files)):
            f = (first + k) % len(self.files)
            wave = read_audio(self.files[f], self.rate)
            if wave is not None and len(wave) >= self.samples:
                offset = int(rng.integers(len(wave) - self.samples + 1))
                return torch.from_numpy(wave[offset : offset + self.samples].copy())
        raise AudioError(f"no file of {len(self.files)} decodes to {self.samples} samples")

    def __iter__(self) -> Iterator[torch.Tensor]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        for b in range(self.first + worker, self.first + self.batches, workers):
            yield torch.stack([self.crop(b * self.batch_size + j) for j in range(self.batch_size)])


def usable_files(dirs: Sequence[str], rate: int, samples: int) -> tuple[list[str], list[int]]:
    """The audio files of ``dirs`` at least ``samples`` long (from their headers)."""
    files, lengths = [], []
    for d in dirs:
        for f in list_audio(d):
            n = planned_samples(str(f), rate, None)
            if n is not None and n >= samples:
                files.append(str(f))
                lengths.append(n)
    if not files:
        raise AudioError(
            f"distill: no audio file of at least {samples / rate:g} s in {list(dirs)}: "
            "name folders of audio, or shorten distill.crop_seconds"
        )
    return files, lengths


class Distiller(L.LightningModule):
    """The student and its heads; the teachers are held outside the module's parameters
    (frozen, not checkpointed)."""

    def __init__(self, student: Encoder, teachers: Sequence[Teacher], settings: Mapping):
        super().__init__()
        self.student_encoder = student
        self.student = student.model
        width = student.config.hidden_size
        self.heads = Heads(
            width, {t.name: (t.encoder.config.hidden_size, t.layers) for t in teachers}
        )
        self._teachers = tuple(teachers)  # a tuple: not registered, not saved
        self.settings = dict(settings)
        self.history: list[dict[str, float]] = []
        self.seconds = 0.0  # of training, over every run that led here
        self._started = time.perf_counter()

    def on_fit_start(self) -> None:
        self._started = time.perf_counter()
        for t in self._teachers:
            t.encoder.model.to(self.device).eval().requires_grad_(False)

    def training_step(self, wave: torch.Tensor, _idx: int) -> torch.Tensor:
        torch.manual_seed(self.settings["seed"] * 1_000_003 + self.global_step)  # dropout
        lengths = torch.full((len(wave),), wave.shape[1], dtype=torch.long)
        hidden = forward(self.student_encoder, wave, lengths).last_hidden_state
        predicted = self.heads(hidden)
        losses, cosines = [], []
        for t in self._teachers:
            with torch.no_grad():
                states = encode(t.encoder, wave, lengths, output_hidden_states=True).hidden_states
            for layer in t.layers:
                target = states[layer]
                if target.shape[1] != hidden.shape[1]:
                    raise ValueError(
                        f"distill: teacher {t.name!r} gives {target.shape[1]} frames where the "
                        f"student gives {hidden.shape[1]}: their frame rates differ"
                    )
                loss, cos = distil_loss(
                    predicted[t.name][layer], target, self.settings["cos_weight"]
                )
                losses.append(loss)
                cosines.append(cos)
        loss = torch.stack(losses).sum()
        cos = torch.stack(cosines).mean()
        self.history.append(
            {"step": self.global_step, "loss": float(loss.detach()), "cos": float(cos.detach())}
        )
        self.log("loss", loss, prog_bar=True)
        self.log("cos", cos, prog_bar=True)
        return loss

    def configure_optimizers(self):
        s = self.settings
        opt = torch.optim.AdamW(self.parameters(), lr=s["lr"], weight_decay=s["weight_decay"])
        warm = max(1, int(s["warmup"] * s["steps"]))

        def factor(step: int) -> float:  # DistilHuBERT's: linear warm-up, then linear decay
            if step < warm:
                return (step + 1) / warm
            return max(0.0, (s["steps"] - step) / max(1, s["steps"] - warm))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return [opt], [{"scheduler": sched, "interval": "step"}]

    def trained_seconds(self) -> float:
        return self.seconds + time.perf_counter() - self._started

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["history"] = self.history
        checkpoint["train_seconds"] = self.trained_seconds()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.history = list(checkpoint.get("history", []))
        self.seconds = float(checkpoint.get("train_seconds", 0.0))
        self._started = time.perf_counter()


def _teachers(cfg: Mapping, heads: int) -> list[Teacher]:
    teachers = []
    for name, spec in cfg["teachers"].items():
        encoder = load_encoder(spec["path"])
        layers = list(spec.get("layers") or target_layers(encoder.config.num_hidden_layers, heads))
        top = encoder.config.num_hidden_layers
        if any(not 1 <= layer <= top for layer in layers):
            raise ValueError(f"distill.teachers.{name}.layers must lie in [1, {top}], got {layers}")
        dirs = [str(d) for d in spec.get("data") or []]
        if not dirs:
            raise ValueError(f"distill.teachers.{name}.data: name folders of audio for it")
        teachers.append(Teacher(str(name), encoder, layers, dirs))
    if not teachers:
        raise ValueError("distill.teachers: name one teacher (or several, for an ensemble)")
    return teachers


def save_base(student: Encoder, path: Path, dtype: torch.dtype, init: str) -> None:
    """The initialisation, saved once (with a card saying what it is): a different one
    already there is an error (students merged through their task vectors must share it)."""
    fresh = {
        k: v.to(dtype) if v.is_floating_point() else v
        for k, v in student.model.state_dict().items()
    }
    if (path / "config.json").is_file():
        saved = load_encoder(path).model.state_dict()
        same = set(saved) == set(fresh) and all(
            torch.equal(saved[k].to(dtype) if saved[k].is_floating_point() else saved[k], v)
            for k, v in fresh.items()
        )
        if not same:
            raise ValueError(
                f"distill.base_out={path} holds another initialisation; students merged "
                "through their task vectors share one: choose another folder or remove it"
            )
    else:
        _export_as(student, path, dtype)
    if not (path / "README.md").is_file():
        (path / "README.md").write_text(
            f"# {path.name}\n\nThe initialisation of distilled students: the conv stack and the "
            f"first {student.config.num_hidden_layers} transformer layers of `{shown(init)}`, "
            "before any training. Students that start here share it as `models.base`: their "
            "task vectors are each student minus this encoder.\n"
        )


def _export_as(encoder: Encoder, path: Path, dtype: torch.dtype) -> None:
    """``encoder`` saved in ``dtype`` (a copy: the one in training keeps its precision)."""
    model = copy.deepcopy(encoder.model).to(dtype)
    export(Encoder(model, path.name, encoder.sample_rate, encoder.normalize, encoder.family), path)


def distill(cfg: Mapping, progress: bool = True, command: str | None = None) -> dict:
    """Train one student as ``cfg`` says (conf/distill/config.yaml) and save it, its base and
    its model card; resumes from ``<out>.resume/last.ckpt`` if a run was killed."""
    out = Path(cfg["out"])
    dtype = {"float16": torch.float16, "float32": torch.float32}[cfg["save_dtype"]]
    L.seed_everything(cfg["seed"], workers=True, verbose=False)
    teachers = _teachers(cfg, cfg["heads"])
    init = load_encoder(cfg["init"])
    student = student_from(init, cfg["layers"])
    base_out = Path(cfg.get("base_out") or out.parent / "base")
    save_base(student, base_out, dtype, init.source)
    rate = init.sample_rate
    samples = int(cfg["crop_seconds"] * rate)
    dirs = sorted({d for t in teachers for d in t.dirs})  # an ensemble: the union of its data
    files, lengths = usable_files(dirs, rate, samples)
    settings = {k: cfg[k] for k in ("seed", "lr", "weight_decay", "warmup", "steps", "cos_weight")}
    module = Distiller(student, teachers, settings)
    resume_dir = Path(f"{out}{RESUME}")  # beside <out>, which the export replaces whole
    last = resume_dir / "last.ckpt"
    done = 0
    if last.is_file():
        try:
            done = int(torch.load(last, map_location="cpu", weights_only=False)["global_step"])
        except Exception as err:  # noqa: BLE001 - a damaged checkpoint: say which, and what to do
            raise RuntimeError(
                f"{last} cannot be read ({err}); remove it to start the distillation again"
            ) from None
    data = CropBatches(files, lengths, samples, rate, cfg["seed"], cfg["batch_size"], done,
                       cfg["steps"] - done)  # fmt: skip
    loader = DataLoader(data, batch_size=None, num_workers=cfg.get("workers") or 0)
    checkpoints = L.pytorch.callbacks.ModelCheckpoint(
        dirpath=resume_dir, save_last=True, save_top_k=0,
        every_n_train_steps=cfg["checkpoint_every"],
    )  # fmt: skip
    trainer = L.Trainer(
        max_steps=cfg["steps"],
        accelerator=cfg["accelerator"],
        devices=1,
        precision=cfg["precision"],
        gradient_clip_val=10.0,
        logger=_logger(cfg, out),
        callbacks=[checkpoints],
        enable_model_summary=False,
        enable_progress_bar=progress,
        log_every_n_steps=10,
    )
    trainer.fit(module, loader, ckpt_path=str(last) if last.is_file() else None)
    seconds = module.trained_seconds()
    module.cpu()
    student.model.eval()
    _export_as(student, out, dtype)
    summary = {"command": command} if command else {}
    summary |= _summary(
        cfg, teachers, init, student, files, lengths, rate, module.history, seconds, done
    )
    write_history(module.history, out)
    (out / "training.json").write_text(json.dumps(summary, indent=2))
    write_card(summary, out)
    if not cfg.get("keep_checkpoints"):
        shutil.rmtree(resume_dir, ignore_errors=True)
    return summary


def _logger(cfg: Mapping, out: Path):
    logger = cfg.get("logger") or {}
    mode = wandb_mode(logger)
    if mode == "disabled":
        return False
    from lightning.pytorch.loggers import WandbLogger

    save = Path(logger.get("dir") or "outputs/distill-wandb")
    save.mkdir(parents=True, exist_ok=True)
    return WandbLogger(project=logger.get("project") or "speechmusic-distill", name=out.name,
                       save_dir=str(save), offline=mode == "offline")  # fmt: skip


def _summary(cfg, teachers, init, student, files, lengths, rate, history, seconds, resumed) -> dict:
    tail = history[-50:] or [{"loss": math.nan, "cos": math.nan}]
    return {
        "teachers": {
            t.name: {
                "source": shown(t.encoder.source),
                "layers": t.layers,
                "data": [shown(d) for d in t.dirs],
            }
            for t in teachers
        },
        "init": shown(init.source),
        "base": shown(cfg.get("base_out") or Path(cfg["out"]).parent / "base"),
        "student_layers": cfg["layers"],
        "parameters": sum(p.numel() for p in student.model.parameters()),
        "data": {"files": len(files), "seconds": sum(lengths) / rate},
        "settings": {k: cfg[k] for k in ("steps", "batch_size", "crop_seconds", "lr", "warmup",
                                         "weight_decay", "cos_weight", "seed", "precision")},
        "steps": len(history),
        "resumed_at_step": resumed,
        "audio_seconds_seen": cfg["steps"] * cfg["batch_size"] * cfg["crop_seconds"],
        "final_loss": float(np.mean([h["loss"] for h in tail])),
        "final_cos": float(np.mean([h["cos"] for h in tail])),
        "train_seconds": seconds,
        "hardware": f"{cfg['accelerator']}, {torch.get_num_threads()} CPU thread(s), "
        f"{platform.machine()}",
        "torch": torch.__version__,
    }  # fmt: skip


def write_history(history: Sequence[Mapping[str, float]], out: Path) -> None:
    write_curves(
        history,
        out,
        [
            ("loss", "loss (L1 - log sigmoid(cos), summed over heads)"),
            ("cos", "cosine similarity to the teacher layers"),
        ],
    )


def shown(path: str | Path) -> str:
    """A path as cards and training.json show it: relative to the repository inside it."""
    root = Path(__file__).resolve().parents[1]
    try:
        return str(Path(path).resolve().relative_to(root))
    except ValueError:
        return str(path)


def write_card(summary: Mapping[str, Any], out: Path) -> None:
    s = summary["settings"]
    teachers = "\n".join(
        f"  - `{name}`: `{t['source']}`, layers {t['layers']}, data "
        + ", ".join(f"`{d}`" for d in t["data"])
        for name, t in summary["teachers"].items()
    )
    names = " and ".join(f"`{n}`" for n in summary["teachers"])
    kind = "An ensemble student of the teachers" if len(summary["teachers"]) > 1 else "A student of"
    text = f"""# {out.name}

{kind} {names}: {summary["parameters"] / 1e6:.2f} M parameters, the conv stack and
the first {summary["student_layers"]} transformer layers of `{summary["init"]}`, distilled the
DistilHuBERT way (one linear head per teacher layer on the last layer; per head the L1 distance
minus {s["cos_weight"]:g} x log sigmoid of the cosine similarity, summed over heads). Its
initialisation is saved in `{summary["base"]}`: the task vector is this encoder minus that one
(`models.base`).

- Teachers:
{teachers}
- Data: {summary["data"]["files"]} files, {summary["data"]["seconds"] / 60:.1f} minutes, random
  {s["crop_seconds"]:g} s crops.
- Training: {summary["steps"]} steps of {s["batch_size"]} crops, AdamW lr {s["lr"]:g} (linear
  warm-up over {s["warmup"]:.0%}, then linear decay), weight decay {s["weight_decay"]:g}, seed
  {s["seed"]}, {s["precision"]}, {summary["hardware"]}, {summary["train_seconds"] / 60:.1f} min.
- Final loss {summary["final_loss"]:.3f}, cosine similarity {summary["final_cos"]:.3f}
  (means of the last 50 steps); the prediction heads are not saved.
- Rebuild: `{summary.get("command", "python -m distill")}`.

Loss curve:

![loss](loss.png)
"""
    (out / "README.md").write_text(text)
