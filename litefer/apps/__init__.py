"""Applications built on the Recognizer: the HTTP service with its web demo, and the mood player.

Submodules are imported on demand so that ``litefer.apps.moodplayer`` does not need
the ``serve`` extra (fastapi, uvicorn) and the service does not need a camera:

- :mod:`litefer.apps.service` — ``create_app(...)`` (FastAPI), ``serve(...)`` (uvicorn)
- :mod:`litefer.apps.moodplayer` — ``MoodSmoother``, ``PlaylistMap``, ``MoodPlayer``
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "create_app": "litefer.apps.service",
    "serve": "litefer.apps.service",
    "MoodSmoother": "litefer.apps.moodplayer",
    "PlaylistMap": "litefer.apps.moodplayer",
    "MoodPlayer": "litefer.apps.moodplayer",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'litefer.apps' has no attribute {name!r}")
