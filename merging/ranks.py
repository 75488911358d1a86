"""A pass over a dataset spread over several devices by Lightning Fabric.

``trainer.devices`` (conf/trainer/) above one spawns a process per device; each rank takes
every world-th batch of the length-sorted plan (so all get long and short clips alike), and
what each rank returns comes back to the calling process, in rank order, through files in a
temporary folder (one node's ranks share it). Ranks are spawned (``ddp_spawn``, or
``ddp_fork`` on CPUs), never relaunched: the job that asked for the pass keeps its merge and
its claim on the output dir in the calling process, as the probes' ``ddp_spawn`` does.
"""

from __future__ import annotations

import logging
import os
import pickle
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

# Strategies that spawn ranks from the job's process. "ddp" (and "auto" on several devices)
# would start run.py again on every rank: a second merge and a second claim on the job's dir.
PASS_STRATEGIES = ("ddp_spawn", "ddp_fork")

logging.getLogger("lightning.fabric").setLevel(logging.WARNING)  # no word per rank per launch


def several_devices(trainer: Mapping[str, Any] | None) -> bool:
    """Whether ``trainer`` may name more than one device (-1, "auto", a list, a count > 1)."""
    devices = (trainer or {}).get("devices", 1)
    if isinstance(devices, (list, tuple)):
        return len(devices) > 1
    if isinstance(devices, str) and devices.strip().lstrip("-").isdigit():
        devices = int(devices)
    return devices != 1


def check_strategy(trainer: Mapping[str, Any] | None) -> None:
    """Refuse a multi-device trainer whose strategy would relaunch the job on every rank."""
    strategy = (trainer or {}).get("strategy", "auto")
    if several_devices(trainer) and strategy not in PASS_STRATEGIES:
        raise ValueError(
            f"trainer.strategy={strategy} with trainer.devices={trainer['devices']}: passes and "
            f"probes spread over devices from the job's own process, with one of "
            f"{', '.join(PASS_STRATEGIES)}; '{strategy}' would start run.py again on every "
            "rank (use trainer=ddp, or set trainer.strategy=ddp_spawn)"
        )


def spread(trainer: Mapping[str, Any] | None):
    """The Fabric that spreads a pass over ``trainer``'s devices, or None for one device (the
    single-process path, on the models' own device)."""
    if not several_devices(trainer):
        return None
    check_strategy(trainer)
    from lightning.fabric import Fabric  # only multi-device passes need it

    fabric = Fabric(
        accelerator=trainer.get("accelerator", "auto"),
        devices=trainer["devices"],
        strategy=trainer.get("strategy", PASS_STRATEGIES[0]),
    )
    return fabric if fabric.world_size > 1 else None


def gather(fabric, fn: Callable[..., Any], *args: Any) -> list[Any]:
    """``fn(fabric, *args)`` on every rank; what each returned (tensors, numbers, strings and
    containers of them), in rank order. ``fn`` and ``args`` must pickle: ranks are spawned.
    They travel as one pickle, by value: nothing needs shared memory (/dev/shm is small in
    many containers), and Lightning does not walk them."""
    payload = pickle.dumps((fn, args), protocol=pickle.HIGHEST_PROTOCOL)
    with tempfile.TemporaryDirectory(prefix="ranks-") as tmp:
        fabric.launch(_rank, payload, tmp)
        return [
            torch.load(Path(tmp) / f"rank-{r}.pt", weights_only=True)
            for r in range(fabric.world_size)
        ]


def _rank(fabric, payload: bytes, tmp: str) -> None:
    if fabric.device.type == "cpu":  # ranks on one CPU share its cores instead of each taking all
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // fabric.world_size))
    fn, args = pickle.loads(payload)
    result = fn(fabric, *args)
    torch.save(result, Path(tmp) / f"rank-{fabric.global_rank}.pt")
