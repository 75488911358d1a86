"""s3prl's own ``run_downstream`` from the installed package (the ``s3prl`` extra), with
today's libraries:

    python -m eval.s3prl.launch -m train -u hf_hubert_custom -k MERGED -d speech_commands \\
        -c eval/s3prl/recipes/speech_commands.yaml -n NAME -o ...

s3prl was written against libraries that have since dropped what it imports. Each shim below
adds back only a name s3prl reaches for, and only where it is missing:

- huggingface_hub >= 1.0 has no ``HfFolder`` or ``Repository``; s3prl imports both at module
  level but uses them only to push to or log into the Hub (``--hub huggingface``), which these
  stand-ins refuse.
- torchaudio >= 2.9 has no ``sox_effects``; the Speech Commands expert reads every clip through
  the chain ``channels 1, rate 16000, gain -3`` (dB), done here with soundfile and soxr.
- torch >= 2.6 unpickles weights only by default; s3prl's own checkpoints hold its
  ``argparse.Namespace`` of arguments, allowed here by name (nothing else is).
- ``--device`` defaults to cuda in s3prl; without a GPU it is cpu unless given.
"""

from __future__ import annotations

import argparse
import sys
import types

import numpy as np
import torch


def _refuse(name: str) -> type:
    def init(self, *args, **kwargs):
        raise RuntimeError(f"huggingface_hub.{name} is gone from huggingface_hub >= 1.0")

    return type(name, (), {"__init__": init, "save_token": staticmethod(init)})


def _effects_file(path, effects, normalize: bool = True, channels_first: bool = True, **_):
    """torchaudio.sox_effects.apply_effects_file for the effects s3prl's experts use."""
    import soundfile as sf

    wave, rate = sf.read(str(path), dtype="float32", always_2d=True)  # (time, channels)
    return _effects_tensor(torch.from_numpy(wave.T.copy()), rate, effects, channels_first)


def _effects_tensor(wave: torch.Tensor, rate: int, effects, channels_first: bool = True):
    import soxr

    for name, *args in effects:
        if name == "channels" and args == ["1"]:
            wave = wave.mean(0, keepdim=True)
        elif name == "rate":
            target = int(float(args[0]))
            if target != rate:
                out = soxr.resample(wave.T.numpy().astype(np.float32), rate, target, "VHQ")
                wave, rate = (
                    torch.from_numpy(np.ascontiguousarray(out.T)).reshape(wave.shape[0], -1),
                    target,
                )
        elif name == "gain":
            wave = wave * 10 ** (float(args[-1]) / 20)
        else:
            raise NotImplementedError(f"sox effect {name} {args} (only channels 1, rate, gain)")
    return (wave if channels_first else wave.T), rate


def install_shims() -> None:
    """Add back what s3prl imports and today's libraries lack (see the module docstring)."""
    import huggingface_hub
    import torchaudio

    for name in ("HfFolder", "Repository"):
        if not hasattr(huggingface_hub, name):
            setattr(huggingface_hub, name, _refuse(name))
    if "torchaudio.sox_effects" not in sys.modules and not hasattr(torchaudio, "sox_effects"):
        sox = types.ModuleType("torchaudio.sox_effects")
        sox.apply_effects_file = _effects_file
        sox.apply_effects_tensor = _effects_tensor
        sys.modules["torchaudio.sox_effects"] = torchaudio.sox_effects = sox
    torch.serialization.add_safe_globals([argparse.Namespace])


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    install_shims()
    if "--device" not in argv and not torch.cuda.is_available():
        argv += ["--device", "cpu"]
    from s3prl import run_downstream

    sys.argv = ["run_downstream.py", *argv]
    run_downstream.main()


if __name__ == "__main__":
    main()
