"""The dashboard's static assets (CSS, JS, vendored htmx and uPlot), never outside their folder."""

from __future__ import annotations

import mimetypes

from fastapi import APIRouter
from fastapi.responses import FileResponse, Response

from controlplane.web import render

router = APIRouter(include_in_schema=False)


@router.get("/static/{path:path}")
async def static(path: str):
    base = render.STATIC.resolve()
    file = (base / path).resolve()
    if base not in file.parents or not file.is_file():
        return Response("not found", status_code=404, media_type="text/plain")
    media = mimetypes.guess_type(file.name)[0] or "application/octet-stream"
    return FileResponse(file, media_type=media, headers={"Cache-Control": "public, max-age=3600",
                                                         "X-Content-Type-Options": "nosniff"})
