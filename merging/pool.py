"""A pool of named encoders to merge: every member of one family and layout, the anchor every
other member is aligned to, and optionally the initialisation they share (``base``), from
which task-vector methods start. A pair is the pool ``{a: A, b: B}`` anchored on ``a``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from merging.load import Encoder, EncoderLoadError, check_mergeable

PAIR = ("a", "b")  # the members' names in the two-member shorthand (pair=...)
# Names the evaluation gives its other rows: a member may not take one.
RESERVED = ("merged", "base", "fbank", "fusion")


@dataclass
class Pool:
    members: dict[str, Encoder]
    anchor: str
    base: Encoder | None = None

    def __post_init__(self) -> None:
        if len(self.members) < 2:
            raise ValueError(f"a pool merges two or more members, got {list(self.members)}")
        taken = sorted(set(self.members) & set(RESERVED))
        if taken:
            raise ValueError(
                f"models.members: {taken} name rows of the evaluation "
                f"({', '.join(RESERVED)}); call the member something else"
            )
        if self.anchor not in self.members:
            raise ValueError(
                f"models.anchor={self.anchor!r} is not a member ({', '.join(self.members)})"
            )

    @classmethod
    def pair(cls, a: Encoder, b: Encoder) -> Pool:
        return cls(dict(zip(PAIR, (a, b), strict=True)), PAIR[0])

    @property
    def others(self) -> list[str]:
        """The members aligned to the anchor, in the pool's order."""
        return [name for name in self.members if name != self.anchor]

    def __iter__(self) -> Iterator[tuple[str, Encoder]]:
        return iter(self.members.items())

    def check(self) -> None:
        """Every member, and the base, of the anchor's family and layout; the first that is
        not is named with the field that differs."""
        anchor = self.members[self.anchor]
        checked = [(f"models.members.{n}", self.members[n]) for n in self.others]
        if self.base is not None:
            checked.append(("models.base", self.base))
        for what, encoder in checked:
            try:
                check_mergeable(anchor, encoder)
            except EncoderLoadError as err:
                raise EncoderLoadError(
                    f"{what} ({encoder.source}) against the anchor {self.anchor!r} "
                    f"({anchor.source}): {err}"
                ) from None
