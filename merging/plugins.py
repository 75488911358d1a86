"""Building the objects a config names by ``_target_`` (matchers, merge methods, suites, ...),
with errors that name the config key instead of Hydra's wrapper."""

from __future__ import annotations

from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate


def build(node: Any, key: str) -> Any:
    """``instantiate(node)``. What the target raises is raised as it is (its messages name
    the config keys); a target that cannot be found is a ``ValueError`` naming ``key``."""
    try:
        return instantiate(node, _convert_="all")
    except InstantiationException as err:
        if err.__cause__ is None or str(err).startswith("Error locating target"):
            raise ValueError(f"{key}._target_: {err}") from err
        raise err.__cause__ from None
