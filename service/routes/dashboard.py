"""The dashboard: static files from service/dashboard/, and plotly.js's basic bundle vendored in
service/dashboard/vendor/ (no CDN)."""

from __future__ import annotations

import re
from pathlib import Path

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse

DASHBOARD = Path(__file__).resolve().parents[1] / "dashboard"
PLOTLY = DASHBOARD / "vendor" / "plotly-basic.min.js"  # scatter (all the dashboard draws), bar and pie
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")  # checked before the name reaches the filesystem
MEDIA = {".html": "text/html", ".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}

router = APIRouter(include_in_schema=False)


@router.get("/")
def index() -> FileResponse:
    return FileResponse(DASHBOARD / "index.html", media_type="text/html", headers={"Cache-Control": "no-cache"})


@router.get("/static/plotly-basic.min.js")
def plotly_js() -> FileResponse:
    return FileResponse(PLOTLY, media_type="text/javascript", headers={"Cache-Control": "max-age=86400"})


@router.get("/static/{name}")
def static(name: str) -> FileResponse:
    if not NAME.fullmatch(name):
        raise HTTPException(404, f"no dashboard file {name!r}")
    path = (DASHBOARD / name).resolve()
    if path.parent != DASHBOARD or not path.is_file() or path.suffix not in MEDIA:
        raise HTTPException(404, f"no dashboard file {name!r}")
    return FileResponse(path, media_type=MEDIA[path.suffix], headers={"Cache-Control": "no-cache"})
