"""Loading encoders of every known family (``merging.families``: HuBERT with MERT-v0 and
MERT-v1-style checkpoints, wav2vec2, WavLM), by the checkpoint's ``model_type``.

Errors are raised as :class:`EncoderLoadError` with a message a user can act on; nothing here
lets a traceback from deep inside torch or the hub client reach the user.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import PreTrainedModel

from merging.families import Family, families, family_for_model, family_of

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class EncoderLoadError(RuntimeError):
    """An encoder could not be loaded or two encoders cannot be merged."""


@dataclass
class Encoder:
    """A frozen encoder plus the input conventions its preprocessor expects."""

    model: PreTrainedModel
    source: str
    sample_rate: int = 16000
    normalize: bool = False
    family: Family = None  # type: ignore[assignment]  # None: by the model's model_type

    def __post_init__(self) -> None:
        if self.family is None:
            self.family = family_for_model(self.model)

    @property
    def config(self):
        return self.model.config

    def __reduce__(self):
        """Pickled as its class, config and weights (the ranks of a pass spread over devices
        are spawned): the model's weight-norm parametrisation does not pickle itself."""
        model = self.model
        state = (type(model), model.config, model.state_dict(), model.training)
        return _rebuild, (state, self.source, self.sample_rate, self.normalize, self.family)


def _rebuild(state: tuple, *fields) -> Encoder:
    cls, config, weights, training = state
    model = cls(config)
    model.load_state_dict(weights)
    model.train(training).requires_grad_(False)
    return Encoder(model, *fields)


WEIGHT_SUFFIXES = (".safetensors", ".bin")


def _read_json(path: Path) -> dict:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as err:
        raise EncoderLoadError(
            f"{path} is not readable JSON ({err}); is the checkpoint complete?"
        ) from None


def _preprocessing(directory: Path | None, config: dict) -> tuple[int, bool]:
    rate = int(config.get("sample_rate", config.get("sampling_rate", 16000)))
    normalize = False
    if directory is not None and (directory / "preprocessor_config.json").is_file():
        pre = _read_json(directory / "preprocessor_config.json")
        rate = int(pre.get("sampling_rate", rate))
        normalize = bool(pre.get("do_normalize", False))
    return rate, normalize


def _looks_like_path(spec: str) -> bool:
    return spec.startswith(("/", ".", "~")) or os.sep * 2 in spec or not _HUB_ID.match(spec)


def load_encoder(spec: str | os.PathLike, device: str | torch.device = "cpu") -> Encoder:
    """Load from a local directory (HF format, or MERT-v1 style) or a hub id."""
    spec = str(spec)
    path = Path(spec).expanduser()
    if path.is_dir():
        encoder = _load_local(path)
    elif path.exists():
        raise EncoderLoadError(f"{spec!r} is a file; pass the checkpoint's directory")
    elif _looks_like_path(spec):
        raise EncoderLoadError(f"encoder path {spec!r} does not exist")
    else:
        encoder = _load_hub(spec)
    # Merging and probing run in float32 whatever the checkpoint stores (fp16, bf16).
    encoder.model.to(device, torch.float32).eval().requires_grad_(False)
    for name, tensor in encoder.model.state_dict().items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise EncoderLoadError(
                f"{spec}: tensor {name} holds NaN or infinite values; a merge or probe of it "
                "would be meaningless (is the checkpoint damaged, or did its training diverge?)"
            )
    return encoder


def _load_hub(repo_id: str) -> Encoder:
    """A hub checkpoint's config, preprocessor and weights (from the local cache when
    offline), loaded like a local folder."""
    offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
    try:
        from huggingface_hub import snapshot_download

        directory = snapshot_download(
            repo_id, allow_patterns=["*.json", "*.safetensors", "pytorch_model*.bin"]
        )
    except Exception as err:  # noqa: BLE001 - the hub client raises many types
        why = "the hub is offline (HF_HUB_OFFLINE is set)" if offline else f"{type(err).__name__}"
        raise EncoderLoadError(
            f"could not load hub id {repo_id!r}: {why}. On a machine without internet, download "
            f"the checkpoint elsewhere and pass its local directory instead (pair.a=/path/to/dir)."
        ) from None
    encoder = _load_local(Path(directory))
    encoder.source = repo_id
    return encoder


def _load_local(directory: Path) -> Encoder:
    config_path = directory / "config.json"
    if not config_path.is_file():
        raise EncoderLoadError(f"{directory} has no config.json; is it a HF checkpoint folder?")
    raw = _read_json(config_path)
    rate, normalize = _preprocessing(directory, raw)
    model_type = raw.get("model_type")
    family = family_of(model_type)
    if family is not None and model_type == family.model_type:
        try:
            model = family.model_class.from_pretrained(directory, local_files_only=True)
        except Exception as err:  # noqa: BLE001
            files = [p.name for p in sorted(directory.iterdir()) if p.suffix in WEIGHT_SUFFIXES]
            raise EncoderLoadError(
                f"could not load {directory} (weights: {', '.join(files) or 'none'}): {err}"
            ) from None
    else:  # an alias (MERT-v1's remote-code config) or unknown: remapped, HuBERT by default
        family = family or families()["hubert"]
        model = _load_remapped(directory, raw, family)
    return Encoder(model, str(directory), rate, normalize, family)


def _read_state(directory: Path) -> dict[str, torch.Tensor]:
    st = directory / "model.safetensors"
    if st.is_file():
        from safetensors.torch import load_file

        try:
            return load_file(str(st))
        except Exception as err:  # noqa: BLE001 - safetensors raises its own types
            raise EncoderLoadError(f"{st} is not a readable safetensors file ({err})") from None
    bins = sorted(directory.glob("pytorch_model*.bin"))
    if not bins:
        raise EncoderLoadError(f"{directory} has neither model.safetensors nor pytorch_model.bin")
    state: dict[str, torch.Tensor] = {}
    for b in bins:
        state.update(torch.load(b, map_location="cpu", weights_only=True))
    return state


def _load_remapped(directory: Path, raw: dict, family: Family) -> PreTrainedModel:
    known = set(family.config_class().to_dict())
    config = family.config_class(
        **{k: v for k, v in raw.items() if k in known and k != "model_type"}
    )
    config.architectures = [family.model_class.__name__]
    if "mask_time_prob" not in raw:
        config.mask_time_prob = 0.05
    model = family.model_class(config)
    state = _read_state(directory)
    state = family.remap(state) if family.remap else state
    expected = set(model.state_dict())
    missing = sorted(expected - set(state))
    unexpected = sorted(set(state) - expected)
    if missing == ["masked_spec_embed"]:
        state["masked_spec_embed"] = model.state_dict()["masked_spec_embed"]
        missing = []
    if missing or unexpected:
        raise EncoderLoadError(
            f"{directory} (model_type={raw.get('model_type')!r}) does not map onto "
            f"{family.model_class.__name__}: "
            f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
            f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}"
        )
    model.load_state_dict(state)
    return model


def check_mergeable(a: Encoder, b: Encoder) -> None:
    """Raise naming every differing architecture field (and the sample rate)."""
    fa, fb = a.family, b.family
    if fa != fb:  # by value: a deep-copied encoder is of its original's family
        raise EncoderLoadError(
            f"encoders {a.source!r} ({fa.model_type}) and {b.source!r} ({fb.model_type}) are of "
            "different families; a permutation merge needs one architecture"
        )
    diffs = []
    for name in fa.arch_fields:
        va, vb = getattr(a.config, name, None), getattr(b.config, name, None)
        if isinstance(va, list | tuple):
            va, vb = list(va), list(vb or [])
        if va != vb:
            diffs.append(f"{name}: {va!r} vs {vb!r}")
    if a.sample_rate != b.sample_rate:
        diffs.append(f"sample_rate: {a.sample_rate} vs {b.sample_rate}")
    if diffs:
        raise EncoderLoadError(
            f"encoders {a.source!r} and {b.source!r} differ in architecture: " + "; ".join(diffs)
        )
