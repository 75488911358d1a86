import json
import sys
from pathlib import Path

import pytest

from eval.s3prl import (
    checkout,
    listed_test_set,
    parse_result,
    run_commands,
    s3prl_commands,
    task_metrics,
    write_script,
)


def test_commands_for_superb_tasks_folds_and_missing_recipes(tmp_path):
    roots = {
        "ks": "/d/sc",
        "er": "/d/IEMOCAP",
        "asr_wer": "/d/LibriSpeech",
        "sid": None,
        "esc50": "/d/ESC-50",
        "genreid": "/d/gtzan",
    }
    cmds, skipped = s3prl_commands(
        tmp_path / "merged",
        roots,
        prefix="id5",
        speech_commands_test="/d/sc_test",
        downstreams={"genreid": "marble_gtzan"},
    )
    names = [c.name for c in cmds]
    assert names == [
        "id5_ks",
        *[f"id5_er_fold{k}" for k in range(1, 6)],
        "id5_asr_wer",
        "id5_genreid",
    ]
    assert set(skipped) == {"esc50"} and "downstreams.esc50" in skipped["esc50"]
    ks = cmds[0].train
    assert ks[ks.index("-u") + 1] == "hf_hubert_custom"
    assert ks[ks.index("-k") + 1] == str((tmp_path / "merged").resolve())
    assert ks[ks.index("-d") + 1] == "speech_commands"
    assert ks[-1] == (
        "config.downstream_expert.datarc.speech_commands_root='/d/sc',,"
        "config.downstream_expert.datarc.speech_commands_test_root='/d/sc_test'"
    )
    assert (
        "test_fold='fold3'" in cmds[3].train[-1]
        and cmds[3].train[cmds[3].train.index("-d") + 1] == "emotion"
    )
    asr = cmds[6].evaluate
    assert asr[asr.index("-t") + 1] == "test-clean" and asr[-1].endswith("dev-clean-best.ckpt")
    # KS without its separate test set is refused rather than run on the wrong split
    _, skipped = s3prl_commands(tmp_path, {"ks": "/d/sc"})
    assert "speech_commands_test" in skipped["ks"]


def test_script_and_running_against_an_s3prl_checkout(tmp_path):
    repo = tmp_path / "s3prl_repo"
    (repo / "s3prl").mkdir(parents=True)
    # a stand-in run_downstream.py that records how it was called and prints what s3prl's
    # experts print after an evaluation
    (repo / "s3prl" / "run_downstream.py").write_text(
        "import json, sys\n"
        "open('calls.jsonl', 'a').write(json.dumps(sys.argv[1:]) + '\\n')\n"
        "args = ' '.join(sys.argv)\n"
        "if 'evaluate' in args:\n"
        "    print('dev acc: 0.5')\n"
        "    print('test-clean wer: 7.25' if 'asr' in args else\n"
        "          'test acc: 0.8' + ('1' if 'fold1' in args else '3'))\n"
        "sys.exit(3 if 'fail' in args else 0)\n"
    )
    cmds, _ = s3prl_commands(
        tmp_path / "merged",
        {"ic": "/d/fsc", "sid": "/d/fail", "er": "/d/iemocap", "asr_wer": "/d/asr"},
        python=sys.executable,
    )
    script = write_script(cmds, tmp_path / "s3prl.sh", checkout(repo))
    text = script.read_text()
    assert text.startswith("#!/usr/bin/env bash") and "-d fluent_commands" in text
    runs = run_commands(cmds, checkout(repo), tmp_path / "logs")
    assert runs["merged_ic"]["status"] == "ok" and runs["merged_ic"]["value"] == pytest.approx(83)
    assert (
        runs["merged_sid"]["status"].startswith("failed (exit 3")
        and "value" not in runs["merged_sid"]
    )
    assert "test acc: 0.83" in Path(runs["merged_ic"]["log"]).read_text()
    calls = [json.loads(x) for x in (repo / "s3prl" / "calls.jsonl").read_text().splitlines()]
    assert [c[1] for c in calls[:3]] == ["train", "evaluate", "train"]  # a failed train: no test
    metrics = task_metrics(runs)
    assert set(metrics) == {"ic", "er", "asr_wer"}  # sid failed: no number rather than a wrong one
    assert metrics["asr_wer"] == {"metric": "wer", "value": 7.25, "runs": 1}
    assert metrics["er"]["runs"] == 5 and metrics["er"]["value"] == pytest.approx((81 + 4 * 83) / 5)
    with pytest.raises(FileNotFoundError, match="run_downstream.py"):
        checkout(tmp_path)


def test_parse_result_reads_the_last_test_metric():
    log = "train loss: 1.0\ndev acc: 0.61\ntest acc: 0.9034\n"
    assert parse_result(log) == ("accuracy", pytest.approx(90.34))
    assert parse_result("dev-clean wer: 9.1\ntest-clean uer: 2.0\ntest-clean wer: 6.42\n") == (
        "wer",
        6.42,
    )
    assert parse_result("Traceback (most recent call last):\n") is None


def test_the_installed_package_runs_only_the_recipes_the_project_ships(tmp_path):
    config = {"runner": {"total_steps": 6}, "downstream_expert": {"datarc": {"num_workers": 0}}}
    cmds, skipped = s3prl_commands(
        tmp_path / "merged",
        {"ks": "/d/sc", "ic": "/d/fsc"},
        speech_commands_test="/d/sc_test",
        python="py",
        package=True,
        config=config,
    )
    (ks,) = cmds
    assert ks.train[:3] == ["py", "-m", "eval.s3prl.launch"]
    recipe = Path(ks.train[ks.train.index("-c") + 1])
    assert recipe.is_file() and recipe.name == "speech_commands.yaml"
    assert ks.train[-1].endswith(
        "config.runner.total_steps=6,,config.downstream_expert.datarc.num_workers=0"
    )
    assert ks.evaluate[:5] == ["py", "-m", "eval.s3prl.launch", "-m", "evaluate"]
    assert "recipe config" in skipped["ic"] and "eval.s3prl.root" in skipped["ic"]


def test_the_testing_list_becomes_a_test_folder_s3prl_reads(tmp_path):
    root = tmp_path / "sc"
    for rel in ("yes/a_nohash_0.wav", "bed/b_nohash_0.wav", "yes/c_nohash_0.wav"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"RIFF")
    (root / "testing_list.txt").write_text("yes/a_nohash_0.wav\nbed/b_nohash_0.wav\n")
    out = listed_test_set(root, tmp_path / "test")
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.wav")) == [
        "_unknown_/bed_b_nohash_0.wav",
        "yes/yes_a_nohash_0.wav",
    ]
    assert (out / "yes" / "yes_a_nohash_0.wav").resolve() == (root / "yes/a_nohash_0.wav").resolve()
    assert listed_test_set(root, tmp_path / "test") == out  # again: nothing to redo
    with pytest.raises(FileNotFoundError, match="speech_commands_test"):
        listed_test_set(tmp_path, tmp_path / "x")


def test_the_sox_chain_of_the_speech_commands_expert_without_sox(tmp_path):
    """channels 1, rate 16000, gain -3: what s3prl's KS expert asks torchaudio's (gone)
    sox_effects for, here on an 8 kHz stereo file."""
    import numpy as np
    import soundfile as sf

    from eval.s3prl.launch import _effects_file

    t = np.arange(8000) / 8000
    left, right = np.sin(2 * np.pi * 440 * t), 0.5 * np.sin(2 * np.pi * 440 * t)
    sf.write(tmp_path / "x.wav", np.stack([left, right], 1).astype(np.float32), 8000)
    effects = [["channels", "1"], ["rate", "16000"], ["gain", "-3.0"]]
    wave, rate = _effects_file(tmp_path / "x.wav", effects)
    assert rate == 16000 and wave.shape == (1, 16000)
    peak = float(wave[0, 2000:14000].abs().max())  # away from the resampler's edges
    assert peak == pytest.approx(0.75 * 10 ** (-3 / 20), rel=0.02)
    with pytest.raises(NotImplementedError, match="reverb"):
        _effects_file(tmp_path / "x.wav", [["reverb", "50"]])
