"""The candidates part of a Store: each search's evaluated candidates and their trained weights
(StoreCore's state)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import delete, func, or_, select

from .errors import NotFoundError
from .store_core import (
    FINAL_STATUSES,
    Candidate,
    CandidateRow,
    EventRow,
    StoreCore,
    WeightsRow,
    _candidate,
    _now,
)


class Candidates(StoreCore):
    """Candidates, one row per key of a search, with their weights.

    Its part of the Store's contract: `record` writes a candidate, its journal event and its
    weights in one transaction; the first final result recorded for a key is the one kept, whoever
    records it later (a re-run, a runner after a takeover), and through held_by nothing is recorded
    once the runner lost the search. A final row never changes, so (all rows, final rows) tells a
    reader whether the candidates changed.
    """

    def record(self, search_id: int, key: str, genome: tuple[int, ...], status: str,
               objectives: dict[str, float] | None = None, metrics: dict[str, Any] | None = None,
               error: str | None = None, worker: str | None = None, seconds: float | None = None,
               weights: bytes | None = None) -> Candidate:
        """Insert or update the candidate `key` of a search, with its journal event and trained
        weights, atomically. A final row without weights has none: what a pending row held goes.

        Idempotent: recording the same final result twice leaves one row. Safe between processes
        (two runners on one search after a lease takeover): the first final result recorded wins,
        and recording over it returns it unchanged, with no event. Through held_by, raises
        LeaseLost; an unknown search raises sqlalchemy's IntegrityError.
        """
        with self._session.begin() as s:
            self._lock_candidate(s, search_id, key)
            self._check_held(s, search_id)
            row = s.scalar(select(CandidateRow).where(CandidateRow.search_id == search_id, CandidateRow.key == key))
            if row is None:
                row = CandidateRow(search_id=search_id, key=key, genome=list(genome))
                s.add(row)
            elif row.status in FINAL_STATUSES:
                return _candidate(row)  # a final result is never overwritten, by a re-run or anything else
            row.status = status
            row.objectives = objectives or {}
            row.metrics = metrics or {}
            row.error, row.worker, row.seconds = error, worker, seconds
            if status != "pending":
                row.finished_at = _now()
            s.flush()
            if weights is not None:
                s.merge(WeightsRow(candidate_id=row.id, data=weights))
            elif status != "pending":  # a final row's weights are its own or none, never a rung's checkpoint
                s.execute(delete(WeightsRow).where(WeightsRow.candidate_id == row.id))
            s.add(EventRow(search_id=search_id, kind="candidate",
                           payload={"candidate": row.id, "key": key, "status": status, "objectives": row.objectives}))
            return _candidate(row)

    def _lock_candidate(self, s: Any, search_id: int, key: str) -> None:
        """Makes the look-up and the write after it one step between processes. Without it, two
        that record one key at once both find no row and the second insert fails, or both find it
        pending and the second final result overwrites the first."""
        self._dialect.lock_candidate(s.connection(), search_id, key)

    def candidates(self, search_id: int, statuses: tuple[str, ...] | None = None, after: int = 0,
                   also: Iterable[int] = ()) -> list[Candidate]:
        """The search's candidates in id order; with `after`, only those past that id, plus the ids in
        `also` (a reader catching up: new rows, and rows that were pending when it last looked)."""
        with self._session() as s:
            query = select(CandidateRow).where(CandidateRow.search_id == search_id).order_by(CandidateRow.id)
            if after or also:
                query = query.where(or_(CandidateRow.id > after, CandidateRow.id.in_(list(also))))
            if statuses:
                query = query.where(CandidateRow.status.in_(statuses))
            return [_candidate(r) for r in s.scalars(query)]

    def candidate_objectives(self, search_id: int, after: int = 0, also: Iterable[int] = ()
                             ) -> list[tuple[int, str, dict[str, float]]]:
        """(id, status, objectives) of the search's candidates, as `candidates` selects them: without
        genomes and metrics, a fraction of the reading for what needs only the objectives."""
        with self._session() as s:
            query = (select(CandidateRow.id, CandidateRow.status, CandidateRow.objectives)
                     .where(CandidateRow.search_id == search_id).order_by(CandidateRow.id))
            if after or also:
                query = query.where(or_(CandidateRow.id > after, CandidateRow.id.in_(list(also))))
            return [(int(i), status, dict(objectives or {})) for i, status, objectives in s.execute(query)]

    def candidate(self, search_id: int, candidate_id: int) -> Candidate:
        """One candidate of the search. Raises NotFoundError if the search has no such candidate."""
        with self._session() as s:
            row = s.get(CandidateRow, candidate_id)
            if row is None or row.search_id != search_id:
                raise NotFoundError(f"search {search_id} has no candidate {candidate_id}")
            return _candidate(row)

    def candidate_counts(self, search_id: int) -> tuple[int, int]:
        """(all rows, final rows): final rows never change, so the pair changes whenever the
        candidates do; readers use it to know when a cached view is stale."""
        with self._session() as s:
            total, final = s.execute(select(
                func.count(CandidateRow.id),
                func.count(CandidateRow.id).filter(CandidateRow.status.in_(FINAL_STATUSES)),
            ).where(CandidateRow.search_id == search_id)).one()
            return int(total), int(final)

    def candidate_counts_of(self, search_ids: Iterable[int]) -> dict[int, tuple[int, int]]:
        """candidate_counts for many searches in one query; a search without candidates is (0, 0)."""
        ids = list(search_ids)
        counts = dict.fromkeys(ids, (0, 0))
        if not ids:
            return counts
        with self._session() as s:
            rows = s.execute(select(
                CandidateRow.search_id, func.count(CandidateRow.id),
                func.count(CandidateRow.id).filter(CandidateRow.status.in_(FINAL_STATUSES)),
            ).where(CandidateRow.search_id.in_(ids)).group_by(CandidateRow.search_id))
            counts.update({int(i): (int(total), int(final)) for i, total, final in rows})
        return counts

    def weights(self, candidate_id: int) -> bytes | None:
        """The candidate's trained state_dict as recorded (torch.save bytes); None if none was kept."""
        with self._session() as s:
            row = s.get(WeightsRow, candidate_id)
            return None if row is None else bytes(row.data)
