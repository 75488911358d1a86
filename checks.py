"""Every value of a job's config, checked before any work: each error names the key, the value
and what the key accepts, so a typo fails in seconds instead of after calibration, or never."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from merging.ranks import check_strategy
from merging.spec import VO_POINTS

BOOLS = (
    "permute.cnn",
    "permute.ffn",
    "permute.res",
    "save_merged",
    "heatmaps_data",
    "resume",
    "progress",
)
# Nodes that take keys of the user's choosing (``+node.key=value``); a ``_target_`` node's
# extra keys go to its constructor, which names what it does not know.
OPEN = ("eval.s3prl.config", "logger", "hydra", "models.members", "merge.weights")
# Keys the code reads where present, which a config group may leave out.
OPTIONAL = (
    "pair.families",
    "calibration.sources",
    "calibration.synthetic",
    "calibration.max_frame_rate",
    "permute.vo_point",
    "eval.backend",
    "eval.floor",
    "eval.speech_commands_test",
)


class ConfigError(ValueError):
    """A config value that no job can run with."""


def _get(cfg: DictConfig, key: str) -> Any:
    return OmegaConf.select(cfg, key, throw_on_missing=False)


def _boolean(cfg: DictConfig, key: str) -> None:
    value = _get(cfg, key)
    if not isinstance(value, bool):
        raise ConfigError(f"{key} must be true or false, got {value!r}")


def _integer(cfg: DictConfig, key: str, low: int) -> None:
    value = _get(cfg, key)
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"{key} must be an integer >= {low}, got {value!r}")


def _positive(cfg: DictConfig, key: str, optional: bool = False) -> None:
    value = _get(cfg, key)
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ConfigError(
            f"{key} must be a number > 0{' or null' if optional else ''}, got {value!r}"
        )


def _probe(cfg: DictConfig, node: str) -> None:
    """A probe's training settings (``eval.probe``, ``eval.ctc``)."""
    if _get(cfg, node) is None:
        return
    _integer(cfg, f"{node}.epochs", 1)
    _integer(cfg, f"{node}.batch_size", 1)
    _integer(cfg, f"{node}.hidden", 0)
    lrs = _get(cfg, f"{node}.lrs")
    if not OmegaConf.is_list(lrs) or not lrs:
        raise ConfigError(f"{node}.lrs must be a non-empty list of learning rates, got {lrs!r}")
    for lr in lrs:
        if isinstance(lr, bool) or not isinstance(lr, int | float) or not lr > 0:
            raise ConfigError(f"{node}.lrs must hold numbers > 0, got {list(lrs)!r}")


def check_values(cfg: DictConfig) -> None:
    """The config's own values: types and ranges, independent of the encoders and the data."""
    for key in BOOLS:
        _boolean(cfg, key)
    if _get(cfg, "eval.test") is not None:  # eval=none probes nothing
        _boolean(cfg, "eval.test")
    metric = _get(cfg, "optimized_metric")
    if metric is not None:
        where, _, score = str(metric).rpartition(".")
        if where not in ("", "validation") or score not in ("speech", "music", "avg"):
            raise ValueError(
                f"optimized_metric={metric}: speech, music or avg (the test split's scores), "
                "or validation.speech|music|avg"
            )
        if not where and _get(cfg, "eval.test") is False:
            raise ValueError(
                f"optimized_metric={metric} is a test score and eval.test=false reads no test "
                f"clip: optimize validation.{score}"
            )
    vo = _get(cfg, "permute.vo_point")
    if vo is not None and vo not in VO_POINTS:  # the spec's own table, checked before any work
        raise ConfigError(f"permute.vo_point must be one of {tuple(VO_POINTS)}, got {vo!r}")
    _integer(cfg, "calibration.batch_size", 1)
    _integer(cfg, "calibration.seed", 0)
    for key in ("calibration.workers", "eval.workers"):
        if _get(cfg, key) is not None:
            _integer(cfg, key, 0)
    _positive(cfg, "calibration.max_seconds")
    _positive(cfg, "calibration.max_frame_rate", optional=True)
    try:  # before any work: a strategy that relaunches run.py would merge again on every rank
        check_strategy(
            OmegaConf.to_container(cfg.trainer, resolve=True) if "trainer" in cfg else None
        )
    except ValueError as err:
        raise ConfigError(str(err)) from None
    heatmaps = _get(cfg, "heatmaps")
    named = OmegaConf.is_list(heatmaps) and all(isinstance(g, str) for g in heatmaps)
    if heatmaps is not None and not named:
        raise ConfigError(f"heatmaps must be a list of group names or null, got {heatmaps!r}")
    if _get(cfg, "eval.suite") is not None:
        _integer(cfg, "eval.batch_size", 1)
        if _get(cfg, "eval.max_seconds") is not None:
            _positive(cfg, "eval.max_seconds")
        for node in ("eval.probe", "eval.ctc"):
            _probe(cfg, node)


def check_calibration_dirs(dirs: Sequence[str]) -> None:
    """Each folder once: a folder listed twice, or inside another listed one, would draw its
    clips twice while the record counts them once."""
    resolved = [(d, Path(d).expanduser().resolve()) for d in dirs]
    for i, (d, p) in enumerate(resolved):
        for e, q in resolved[:i]:
            if p == q or p.is_relative_to(q) or q.is_relative_to(p):
                how = "the same folder as" if p == q else "nested with"
                raise ConfigError(f"calibration.dirs: {d!r} is {how} {e!r}; list each folder once")


def check_added_keys(cfg: DictConfig, overrides: Sequence[str]) -> None:
    """``+node.key=value`` adds a key the job would silently ignore, unless ``node`` takes
    keys of the user's choosing (``OPEN``, a ``_target_`` node) or the code reads ``key``
    where it is present (``OPTIONAL``)."""
    for override in overrides:
        if not override.startswith("+"):
            continue
        key = override.lstrip("+").split("=", 1)[0]
        parent, _, name = key.rpartition(".")
        if not parent or parent.startswith(OPEN) or key in OPTIONAL:
            continue  # a top-level key or group (Hydra's own checks), or one read where present
        node = _get(cfg, parent)
        if OmegaConf.is_dict(node) and "_target_" in node:
            continue
        known = ", ".join(str(k) for k in node if k != name) if OmegaConf.is_dict(node) else ""
        raise ConfigError(
            f"{key} is not a key of {parent} ({known}): nothing would read it. Drop the '+' to "
            f"set an existing key; check its spelling"
        )


def check_cache_dir(path: str | None) -> None:
    """The cache dir can be written (found now, not after the first hour of compute)."""
    if path is None:
        return
    root = Path(path).expanduser()
    probe = root / f".write-test-{os.getpid()}"
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise ConfigError(
            f"paths.cache: cannot write to {root} ({err.strerror or err}); point paths.cache "
            "(or MERGE_CACHE_DIR) at a writable folder"
        ) from None


def check_heatmaps(cfg: DictConfig, groups: set[str]) -> None:
    """``heatmaps`` names groups of the encoders' permutation spec."""
    unknown = [g for g in cfg.heatmaps or [] if g not in groups]
    if unknown:
        some = ", ".join(sorted(groups, key=lambda g: (len(g), g))[:12])
        raise ConfigError(f"heatmaps: no group {unknown} in these encoders (groups: {some}, ...)")
