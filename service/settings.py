"""What an operator can set for a service: where the store is, who may read, and the limits."""

from __future__ import annotations

from pydantic import BaseModel, Field

LOOPBACK = ("127.0.0.1", "localhost", "::1")


class Settings(BaseModel):
    db: str | None = Field(None, description="SQLite file or SQLAlchemy URL; default as for the CLI")
    open_reads: bool = Field(False, description="let requests without a token read every search (a laptop)")
    max_population: int = Field(256, ge=2)
    max_evaluations: int = Field(10_000, ge=1)
    max_epochs: int = Field(200, ge=1)
    max_concurrent: int = Field(4, ge=1, description="queued + running searches per owner")
    max_body_bytes: int = Field(64 * 1024, ge=1024)
    max_page: int = Field(1000, ge=1)
    event_poll_seconds: float = Field(0.5, gt=0)

    @staticmethod
    def default_open_reads(host: str) -> bool:
        """Reads are open by default only when nothing beyond this machine can connect."""
        return host in LOOPBACK
