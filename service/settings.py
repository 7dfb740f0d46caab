"""What an operator can set for a service: where the store is, who may read, and the limits."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field

LOOPBACK = ("127.0.0.1", "localhost", "::1")
DEFAULT_DATA_ROOT = Path("~") / ".dvolver" / "data"


class Settings(BaseModel):
    db: str | None = Field(None, description="SQLite file or SQLAlchemy URL; default as for the CLI")
    open_reads: bool = Field(False, description="let requests without a token read every search (a laptop)")
    max_population: int = Field(256, ge=2, description="largest population a submitted search may ask for")
    max_evaluations: int = Field(10_000, ge=1, description="largest budget a submitted search may ask for")
    max_epochs: int = Field(200, ge=1, description="most training epochs (fine-tuning included) a search may ask for")
    max_concurrent: int = Field(4, ge=1, description="queued + running searches per owner")
    max_final_epochs: int = Field(600, ge=1, description="most epochs a final training may ask for (Dvolver's "
                                  "CIFAR-10 recipe: 600)")
    max_trainings: int = Field(8, ge=1, description="queued + running final trainings per owner")
    max_body_bytes: int = Field(64 * 1024, ge=1024, description="larger request bodies are refused with 413 unread")
    max_json_depth: int = Field(32, ge=8, le=512, description=(
        "JSON bodies nested deeper are refused with 422 before they are parsed (a SearchSpec needs 4)"))
    max_page: int = Field(1000, ge=1, description="most items one page of a list returns")
    event_poll_seconds: float = Field(0.5, gt=0)
    data_roots: list[str] = Field(default_factory=lambda: [str(DEFAULT_DATA_ROOT)], max_length=64, description=(
        "folders whose files a submitted search may name (dataset, space_options.table); paths outside them, "
        "through '..' or a symlink included, are refused with 422"))

    @staticmethod
    def default_open_reads(host: str) -> bool:
        """Reads are open by default only when nothing beyond this machine can connect."""
        return host in LOOPBACK
