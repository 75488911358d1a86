"""Fixtures shared by test modules."""

from __future__ import annotations

import os

import pytest

# Tests never touch the network: any hub access must fail fast and clearly.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")


@pytest.fixture(autouse=True)
def signal_handlers():
    """Each test leaves SIGINT and SIGTERM as it found them: Lightning ignores SIGINT once it
    has handled one in-process, and every subprocess started later would inherit that."""
    import signal

    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    yield
    for s, handler in saved.items():
        signal.signal(s, handler)


@pytest.fixture(scope="session")
def pair(tmp_path_factory):
    """Two tiny random encoders (A, B), a calibration folder with bad files among good ones
    (calib) and a two-class task (task)."""
    from merging.merge import export
    from tests.helpers import random_encoder, tiny_config
    from tests.test_audio import write_mixed_folder
    from tests.test_eval import make_two_class_folder

    root = tmp_path_factory.mktemp("pair")
    export(random_encoder(tiny_config(), 0), root / "A")
    export(random_encoder(tiny_config(), 1), root / "B")
    write_mixed_folder(root / "calib")
    make_two_class_folder(root / "task", per_class=12)
    return root
