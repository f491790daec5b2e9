"""litefer: lightweight facial expression recognition."""
from __future__ import annotations

from litefer._version import __version__

__all__ = ["__version__", "Recognizer", "create_model", "list_models"]


def __getattr__(name: str):  # lazy, so `import litefer` stays cheap
    if name == "Recognizer":
        from litefer.deploy.recognizer import Recognizer
        return Recognizer
    if name in ("create_model", "list_models"):
        from litefer import models
        return getattr(models, name)
    raise AttributeError(name)
