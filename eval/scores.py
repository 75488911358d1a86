"""The paper's Speech / Music / Avg scores.

Each task is normalised between a floor and a reference model and scaled to 1000:
Speech = 1000/n * sum over speech tasks of (s - f) / (ref_A - f), with f the FBANK probe's score
(the same formula covers WER, where lower is better); Music = 1000/n * sum over music tasks
(ESC-50 included) of s / ref_B; Avg = (Speech + Music) / 2.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from eval.tasks import PAPER_TASKS, Task

# The paper's task columns, by domain, and the FBANK floors of its speech tasks.
PAPER_SPEECH = ("asr_wer", "ks", "ic", "sid", "er")
PAPER_MUSIC = ("singid", "vocid", "instcls", "pitchid", "genreid", "esc50")
PAPER_FBANK = {"asr_wer": 91.54, "ks": 8.63, "ic": 9.10, "sid": 0.0, "er": 35.39}
# A WER task's floor where no FBANK number is given: an empty transcript's WER. A floor of 0
# would score s / A, which grows as the WER gets worse.
WER_FLOOR = 100.0


def domain_score(metrics: Mapping, reference: Mapping, floor: Mapping | None = None):
    """1000 x the mean of (s - floor) / (reference - floor) over the reference's tasks.

    Values are numbers or arrays of bootstrap resamples (elementwise; a resample whose
    reference equals its floor gives NaN, a point estimate that does raises)."""
    if not reference:
        raise ValueError("no tasks to score")
    missing = sorted(set(reference) - set(metrics))
    if missing:
        raise KeyError(f"metrics lack tasks {missing}")
    total = 0.0
    for task, ref in reference.items():
        f = (floor or {}).get(task, 0.0)
        den = np.asarray(ref, dtype=np.float64) - f
        if den.ndim == 0:
            if den == 0:
                raise ValueError(
                    f"{task}: the reference equals the floor ({ref}): cannot normalise"
                )
            total += (metrics[task] - f) / float(den)
        else:
            total = total + (np.asarray(metrics[task]) - f) / np.where(den == 0, np.nan, den)
    return 1000.0 * total / len(reference)


def usable_floors(
    tasks: Sequence[Task], ref_a: Mapping[str, float], floor: Mapping[str, float]
) -> tuple[dict[str, float], list[str]]:
    """The floors model A beats (others would turn (s - f) / (A - f) upside down), and the
    speech tasks dropped for that."""
    usable, dropped = {}, []
    for t in tasks:
        if t.domain == "speech" and t.name in floor and t.name in ref_a:
            f, r = floor[t.name], ref_a[t.name]
            if r > f if t.higher_is_better else r < f:
                usable[t.name] = f
            else:
                dropped.append(t.name)
    return usable, dropped


def suite_scores(
    metrics: Mapping, tasks: Sequence[Task], ref_a: Mapping, ref_b: Mapping, floor: Mapping
) -> dict:
    """Speech (vs A, above ``floor``, already filtered by ``usable_floors``), Music (vs B)
    and Avg where both exist; numbers or arrays of resamples alike."""
    out: dict = {}
    for domain, ref, low in (("speech", ref_a, floor), ("music", ref_b, None)):
        names = [t.name for t in tasks if t.domain == domain]
        if names:
            try:
                out[domain] = domain_score(metrics, {t: ref[t] for t in names}, low)
            except ValueError as err:  # e.g. a parent no better than the floor on a task
                out[domain] = None
                out[f"{domain}_error"] = str(err)
    if out.get("speech") is not None and out.get("music") is not None:
        out["avg"] = (out["speech"] + out["music"]) / 2
    return out


def paper_scores(
    metrics: Mapping[str, float], ref_a: Mapping[str, float], ref_b: Mapping[str, float]
) -> dict:
    """The paper's Table I scores of one row: ``suite_scores`` over its eleven tasks with its
    FBANK floors."""
    return suite_scores(metrics, list(PAPER_TASKS.values()), ref_a, ref_b, PAPER_FBANK)
