"""What a result is a function of: the code that computed it and the encoders it ran.

Every cache key and a job's resume identity are built from these, so that a change to any of
them recomputes the value instead of serving an old one:

- ``source_digest``: the named modules and every module of the project they import, found by
  reading their import statements (late imports inside functions included), recursively;
  installed packages (torch, transformers, ...) are left out, they have versions of their own.
- ``model_digest``: an encoder's weights and the configuration its forward pass reads (the
  whole ``config.json`` but for names, versions and output flags): a checkpoint with other
  ``layer_norm_eps`` and the same weights computes other activations.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib.util
import json
import sysconfig
from collections.abc import Iterable
from importlib.machinery import ModuleSpec, PathFinder
from pathlib import Path
from typing import Any

import torch

# config.json fields that change no activation: names, versions, storage dtype (encoders run
# in float32), label maps of heads the encoders do not have, what the forward returns.
COSMETIC = frozenset(
    {
        "_name_or_path",
        "architectures",
        "transformers_version",
        "dtype",
        "torch_dtype",
        "id2label",
        "label2id",
        "return_dict",
        "output_attentions",
        "output_hidden_states",
        "problem_type",
    }
)

_INSTALLED = tuple(
    str(Path(p).resolve())
    for key in ("stdlib", "platstdlib", "purelib", "platlib")
    if (p := sysconfig.get_paths().get(key))
)


def _find(name: str) -> ModuleSpec | None:
    """The module's spec, found on sys.path without importing it (or its packages); through
    the import system (which imports the packages) for a top-level package sys.path does not
    show, such as one an editable install's finder serves."""
    spec, path = None, None
    parts = name.split(".")
    for i in range(len(parts)):
        spec = PathFinder.find_spec(".".join(parts[: i + 1]), path)
        if spec is None:
            if i:  # found the package, not this name in it: a function or class, no module
                return None
            break
        path = spec.submodule_search_locations
        if path is None and i < len(parts) - 1:  # a module, not a package: no submodules
            return None
    else:
        return spec
    try:
        return importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None


@functools.cache
def _local_package(top: str) -> bool:
    """Whether a top-level module or package is part of a project (not installed, not built in)."""
    spec = _find(top)
    if spec is None:
        return False
    where = spec.origin if spec.origin not in (None, "namespace") else None
    locations = list(spec.submodule_search_locations or [])
    paths = [where] if where else locations
    return bool(paths) and not any(str(Path(p).resolve()).startswith(_INSTALLED) for p in paths)


def _local_file(name: str) -> Path | None:
    """The source file of a module that is part of a project (not installed), else None."""
    if not _local_package(name.split(".")[0]):
        return None
    spec = _find(name)
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return None
    origin = Path(spec.origin).resolve()
    if str(origin).startswith(_INSTALLED):
        return None
    return origin


def _imports(name: str, source: Path) -> set[str]:
    """Every module ``source`` (the module ``name``) names in an import statement."""
    package = name if source.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(source.read_bytes(), str(source))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                found.update(".".join(parts[: i + 1]) for i in range(len(parts)))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            parts = base.split(".")
            found.update(".".join(parts[: i + 1]) for i in range(len(parts)))
            found.update(f"{base}.{alias.name}" for alias in node.names)  # maybe submodules
    return found


@functools.cache
def source_closure(*modules: str) -> tuple[tuple[str, Path], ...]:
    """(module, file) of ``modules`` and of every project module they import, recursively."""
    seen: dict[str, Path] = {}
    todo = list(modules)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        path = _local_file(name)
        if path is None:
            if name in modules:
                raise ModuleNotFoundError(f"no source for module {name!r}")
            continue
        seen[name] = path
        todo.extend(_imports(name, path) - seen.keys())
    return tuple(sorted(seen.items()))


def digest_files(named: Iterable[tuple[str, Path]], digest_size: int = 8) -> str:
    digest = hashlib.blake2b(digest_size=digest_size)
    for name, path in named:
        digest.update(name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def source_digest(*modules: str) -> str:
    """A digest of ``modules`` and everything of the project they import (see the module
    docstring): part of every cache key, so that edited code recomputes what it computes."""
    return digest_files(source_closure(*modules))


def target_modules(targets: Iterable[str]) -> tuple[str, ...]:
    """The project modules that define ``_target_`` paths ("pkg.module.Name" -> "pkg.module");
    installed ones are left out."""
    found = set()
    for target in targets:
        parts = str(target).split(".")
        for i in range(len(parts), 0, -1):
            if _local_file(".".join(parts[:i])) is not None:
                found.add(".".join(parts[:i]))
                break
    return tuple(sorted(found))


def modules_of(*objects: Any) -> tuple[str, ...]:
    """The modules that define ``objects`` (functions, classes): e.g. an encoder family's
    adapters, which are found at run time rather than imported."""
    return tuple(sorted({o.__module__ for o in objects if getattr(o, "__module__", None)}))


def forward_config(config: Any) -> dict:
    """The configuration an encoder's forward pass reads: ``config.json`` without the
    ``COSMETIC`` fields."""
    raw = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    return {k: v for k, v in sorted(raw.items()) if k not in COSMETIC}


def model_digest(model: torch.nn.Module) -> str:
    """A digest of a model's weights (names, dtypes, bytes) and of its forward configuration."""
    h = hashlib.blake2b(digest_size=16)
    config = getattr(model, "config", None)
    if config is not None:
        h.update(json.dumps(forward_config(config), sort_keys=True, default=str).encode())
    for key, t in sorted(model.state_dict().items()):
        h.update(key.encode())
        h.update(str(t.dtype).encode())
        h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
