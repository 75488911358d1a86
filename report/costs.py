"""What each job of a sweep cost beyond the paper's method: matching seconds, the merge
method's extra passes over the calibration clips, and the time they took.

python -m report.costs multirun/methods/demo-demo      # prints costs.md and writes it there
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from report.table import load_records


def render(sweep: str | Path) -> str:
    lines = [
        "| ID | configuration | matching (s) | extra passes | refining (s) | total (s) |",
        "|---|---|---|---|---|---|",
    ]
    for row, record in load_records(sweep):
        if record.status != "ok":
            continue
        refined = record.merge.get("refined") or {}
        seconds = record.seconds
        lines.append(
            f"| {row.key} | {row.description} | {seconds.get('matching', 0):.2f} | "
            f"{refined.get('passes', 0)} | {seconds.get('refining', 0):.1f} | "
            f"{record.total_seconds or 0:.0f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep", type=Path)
    args = parser.parse_args(argv)
    text = render(args.sweep)
    (args.sweep / "costs.md").write_text(text)
    print(text, end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
