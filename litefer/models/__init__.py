"""litefer's model zoo: a registry of builders, one file per model family.

>>> from litefer.models import create_model, list_models
>>> m = create_model("i_mobilenetv2", num_classes=7)

Every model has ``default_input`` = (channels, size), ``num_features`` (the width of
``forward_features``), ``forward_features(x) -> (N, num_features)`` (the pooled
embedding that metric losses use), ``forward_head(f) -> (N, num_classes)`` and
``forward(x) = forward_head(forward_features(x))``.
"""
from litefer.models._registry import ModelInfo, create_model, list_models, model_info, register_model

# importing the family modules registers their builders
from litefer.models import i_mobilenetv2, a_mobilenet, lfn, se_sepnet, baselines, ensemble  # noqa: F401,E402

__all__ = ["ModelInfo", "create_model", "list_models", "model_info", "register_model"]
