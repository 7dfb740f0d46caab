"""A stored search, opened to be run: its spec, its space, its data, each checked against what it ran on.

A search is resumed only on what it first ran on. Its candidate keys must use this Dvolver's key
scheme, or its stored results could not be matched; its data (the dataset or the table) must have
the fingerprint recorded, or the results would mix two problems.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import search_spaces
from search_spaces import SearchSpace

from . import data
from .errors import DvolverError
from .spec import SearchSpec
from .store import Store


@dataclass(frozen=True)
class LoadedSearch:
    search_id: int
    spec: SearchSpec
    space: SearchSpace
    versions: dict[str, Any]  # what the search was recorded with
    fingerprint: str
    dataset: data.Dataset | None  # None in table mode: nothing is trained
    input_shape: tuple[int, ...] | None
    num_classes: int | None


def load(store: Store, search_id: int) -> LoadedSearch:
    """Raises NotFoundError for an unknown search and DvolverError, saying what to do, when the search
    cannot be resumed here."""
    search = store.get_search(search_id)
    spec = SearchSpec.from_stored(search.spec)
    if search.versions.get("key_scheme") != search_spaces.KEY_SCHEME:
        raise DvolverError(f"search {search_id} was recorded with candidate key scheme "
                           f"{search.versions.get('key_scheme')}, this Dvolver uses {search_spaces.KEY_SCHEME}: "
                           "its stored results cannot be matched; start a new search")
    try:
        space = spec.search_space()
    except (OSError, ValueError) as exc:
        raise DvolverError(f"search {search_id}: cannot load its search space: {exc}") from None
    dataset = None
    if spec.table_mode:
        input_shape, num_classes = None, None
        fingerprint = space.table.fingerprint  # type: ignore[attr-defined]
    else:
        dataset = data.load(spec.dataset)
        input_shape, num_classes, fingerprint = dataset.input_shape, dataset.num_classes, dataset.fingerprint
    recorded = search.stats.get("data_fingerprint")
    if recorded not in (None, fingerprint):
        source = spec.space_options["table"] if spec.table_mode else spec.dataset
        raise DvolverError(f"search {search_id} ran on other data: {source} changed since (fingerprint "
                           f"{recorded}, now {fingerprint}); start a new search")
    return LoadedSearch(search_id, spec, space, search.versions, fingerprint, dataset, input_shape, num_classes)
