"""Errors a user can cause. Each message says what was wrong and what to do about it."""


class DvolverError(Exception):
    """Base of every user-facing error; the CLI prints it on one line and exits with code 2."""


class SpecError(DvolverError):
    """The search description is invalid."""


class DatasetError(DvolverError):
    """A dataset path or file cannot be used."""


class NotFoundError(DvolverError):
    """A search or candidate id that the store does not hold."""


class StoreError(DvolverError):
    """The database cannot be opened or written."""


class ConflictError(DvolverError):
    """The request does not fit the current state (cancelling a finished search, a taken name)."""


class LimitError(DvolverError):
    """A configured limit would be exceeded (a service's searches per owner)."""


class LeaseLost(DvolverError):
    """A runner's lease on its search ran out and another runner holds it now: this one writes nothing more."""
