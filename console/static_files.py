"""The console's static files (stylesheet, scripts) with a cache lifetime, so a page load does not
revalidate each of them every time. Their names are not fingerprinted: the lifetime stays short
enough that an upgraded console's stylesheet arrives within the hour (ETag revalidation after)."""

from __future__ import annotations

import os

from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

STATIC_CACHE_CONTROL = "public, max-age=3600"


class CachedStaticFiles(StaticFiles):
    """StaticFiles whose answers (200 and 304) carry STATIC_CACHE_CONTROL."""

    def file_response(
        self,
        full_path: str | os.PathLike[str],
        stat_result: os.stat_result,
        scope: Scope,
        status_code: int = 200,
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        response.headers["Cache-Control"] = STATIC_CACHE_CONTROL
        return response
