"""Which files a submitted search may name: only those under the service's data roots.

A spec names files on the service's machine (a dataset, a results table) that runners read. Anyone
with a token can submit one, so a path is checked before anything opens it: no NUL bytes, no '..',
and once symlinks are resolved it must still lie under a root. Relative paths are looked up under
each root in turn, so a client need not know where the roots are.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

MAX_PATH_CHARS = 1024


def resolved_roots(roots: Iterable[str]) -> tuple[Path, ...]:
    return tuple(Path(root).expanduser().resolve() for root in roots)


def confine(value: str, roots: tuple[Path, ...]) -> str:
    """The absolute path `value` names under one of `roots`; ValueError for anything else."""
    if "\x00" in value:
        raise ValueError("a path may not contain a NUL byte")
    if len(value) > MAX_PATH_CHARS:
        raise ValueError(f"a path may be at most {MAX_PATH_CHARS} characters, got {len(value)}")
    if not value.strip():
        raise ValueError("the path is empty")
    path = Path(value)
    if ".." in path.parts:
        raise ValueError("a path may not contain '..'")
    inside = []
    for candidate in [path] if path.is_absolute() else [root / path for root in roots]:
        try:
            real = candidate.resolve()  # follows symlinks, so a link out of a root is caught below
        except (OSError, RuntimeError):  # a symlink loop, a name the OS refuses
            continue
        if any(real.is_relative_to(root) for root in roots):
            if _exists(real):
                return str(real)
            inside.append(real)
    if inside:
        return str(inside[0])  # missing: the spec's own check says so, naming the field
    # Whether the file exists is not said: outside the roots, nothing may be learnt about the disk.
    raise ValueError("the path is outside the folders this service reads data from (its data roots); "
                     "give a path under one of them, or one relative to them")


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except OSError:  # a name too long for the OS
        return False
