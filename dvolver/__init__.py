"""Dvolver: multi-objective neural architecture search and pruning.

The public names load on first use, so that `dvolver list` and friends do not pay for torch.
"""

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "SearchSpec": "dvolver.spec",
    "run_search": "dvolver.api",
    "resume_search": "dvolver.api",
    "SearchResult": "dvolver.engine",
    "Progress": "dvolver.engine",
    "DvolverError": "dvolver.errors",
}
__all__ = [*_EXPORTS, "__version__"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'dvolver' has no attribute {name!r}")
