"""The paper's eleven tasks: what each measures, how it is probed and where its data come from."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

from eval import datasets
from eval.data import Example

KINDS = ("utterance", "kfold", "ctc")


@dataclass(frozen=True)
class Task:
    name: str  # the column name in results and in the paper's table
    paper: str  # the name the paper prints
    domain: str  # speech | music (ESC-50 counts as music in the paper's score)
    kind: str  # utterance classification, k-fold classification, or CTC transcription
    metric: str  # accuracy (higher is better) or wer (lower is better)
    adapter: Callable[..., list[Example]] | None = None  # None: a task known by its results
    max_seconds: float = 10.0  # utterance crop: each clip's first max_seconds
    settings: dict = field(default_factory=dict)

    @property
    def higher_is_better(self) -> bool:
        return self.metric != "wer"


PAPER_TASKS: dict[str, Task] = {
    t.name: t
    for t in (
        Task("asr_wer", "ASR", "speech", "ctc", "wer", datasets.librispeech, 35.0),
        Task("ks", "KS", "speech", "utterance", "accuracy", datasets.speech_commands, 1.0),
        Task("ic", "IC", "speech", "utterance", "accuracy", datasets.fluent_speech_commands),
        Task("sid", "SID", "speech", "utterance", "accuracy", datasets.voxceleb1_identification),
        Task("er", "ER", "speech", "kfold", "accuracy", datasets.iemocap),
        Task(
            "singid",
            "SingID",
            "music",
            "utterance",
            "accuracy",
            partial(datasets.vocalset, target="singer"),
        ),
        Task(
            "vocid",
            "VocID",
            "music",
            "utterance",
            "accuracy",
            partial(datasets.vocalset, target="technique"),
        ),
        Task(
            "instcls",
            "InstCls",
            "music",
            "utterance",
            "accuracy",
            partial(datasets.nsynth, target="instrument_family"),
            4.0,
        ),
        Task(
            "pitchid",
            "PitchID",
            "music",
            "utterance",
            "accuracy",
            partial(datasets.nsynth, target="pitch"),
            4.0,
        ),
        Task("genreid", "GenreID", "music", "utterance", "accuracy", datasets.gtzan, 30.0),
        Task("esc50", "ESC-50", "music", "kfold", "accuracy", datasets.esc50, 5.0),
    )
}
