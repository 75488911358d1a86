"""The paper's Speech / Music / Avg scores.

Each task is normalised between a floor and a reference model and scaled to 1000:
Speech = 1000/n * sum over speech tasks of (s - f) / (ref_A - f), with f the FBANK probe's score
(the same formula covers WER, where lower is better); Music = 1000/n * sum over music tasks
(ESC-50 included) of s / ref_B; Avg = (Speech + Music) / 2.
"""

from __future__ import annotations

from collections.abc import Mapping

# The paper's task columns, by domain, and the FBANK floors of its speech tasks.
PAPER_SPEECH = ("asr_wer", "ks", "ic", "sid", "er")
PAPER_MUSIC = ("singid", "vocid", "instcls", "pitchid", "genreid", "esc50")
PAPER_FBANK = {"asr_wer": 91.54, "ks": 8.63, "ic": 9.10, "sid": 0.0, "er": 35.39}


def domain_score(
    metrics: Mapping[str, float],
    reference: Mapping[str, float],
    floor: Mapping[str, float] | None = None,
) -> float:
    """1000 x the mean of (s - floor) / (reference - floor) over the reference's tasks."""
    if not reference:
        raise ValueError("no tasks to score")
    missing = sorted(set(reference) - set(metrics))
    if missing:
        raise KeyError(f"metrics lack tasks {missing}")
    total = 0.0
    for task, ref in reference.items():
        f = (floor or {}).get(task, 0.0)
        if ref == f:
            raise ValueError(f"{task}: the reference equals the floor ({ref}); cannot normalise")
        total += (metrics[task] - f) / (ref - f)
    return 1000.0 * total / len(reference)


def paper_scores(
    metrics: Mapping[str, float],
    ref_a: Mapping[str, float],
    ref_b: Mapping[str, float],
    speech: tuple[str, ...] = PAPER_SPEECH,
    music: tuple[str, ...] = PAPER_MUSIC,
    floors: Mapping[str, float] = PAPER_FBANK,
) -> dict[str, float]:
    """Speech (vs model A and the FBANK floor), Music (vs model B) and their mean."""
    s = domain_score(metrics, {t: ref_a[t] for t in speech}, floors)
    m = domain_score(metrics, {t: ref_b[t] for t in music})
    return {"speech": s, "music": m, "avg": (s + m) / 2}
