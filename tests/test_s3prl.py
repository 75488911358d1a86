import json
import sys

import pytest

from eval.s3prl import run_commands, s3prl_commands, write_script


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
    checkout = tmp_path / "s3prl_repo"
    (checkout / "s3prl").mkdir(parents=True)
    # a stand-in run_downstream.py that records how it was called
    (checkout / "s3prl" / "run_downstream.py").write_text(
        "import json, sys\n"
        "open('calls.jsonl', 'a').write(json.dumps(sys.argv[1:]) + '\\n')\n"
        "sys.exit(3 if 'fail' in ' '.join(sys.argv) else 0)\n"
    )
    cmds, _ = s3prl_commands(
        tmp_path / "merged", {"ic": "/d/fsc", "sid": "/d/fail"}, python=sys.executable
    )
    script = write_script(cmds, tmp_path / "s3prl.sh", str(checkout))
    text = script.read_text()
    assert text.startswith("#!/usr/bin/env bash") and "-d fluent_commands" in text
    status = run_commands(cmds, checkout, tmp_path / "logs")
    assert status["merged_ic"] == "ok" and status["merged_sid"].startswith("failed (exit 3")
    calls = [json.loads(x) for x in (checkout / "s3prl" / "calls.jsonl").read_text().splitlines()]
    assert [c[1] for c in calls] == ["train", "evaluate", "train"]  # a failed train is not tested
    with pytest.raises(FileNotFoundError, match="run_downstream.py"):
        run_commands(cmds, tmp_path, tmp_path / "logs")
