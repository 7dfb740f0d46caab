"""Dvolver: multi-objective neural architecture search and pruning."""

from .api import resume_search, run_search
from .engine import Progress, SearchResult
from .errors import DvolverError
from .spec import SearchSpec

__version__ = "0.1.0"
__all__ = ["DvolverError", "Progress", "SearchResult", "SearchSpec", "__version__", "resume_search", "run_search"]
