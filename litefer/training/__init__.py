"""Training: YAML configs, the training loop, multi-GPU.

Modules: :mod:`~litefer.training.config` (YAML -> dataclasses), :mod:`~litefer.training.data`
(splits), :mod:`~litefer.training.batches` (uint8 tensors, batch augmentation),
:mod:`~litefer.training.build` (model, loss, optimizer), :mod:`~litefer.training.schedule`,
:mod:`~litefer.training.metrics`, :mod:`~litefer.training.speed` (step options per CPU),
:mod:`~litefer.training.state` (checkpoints, resume, status), :mod:`~litefer.training.runs`
(``litefer runs``), :mod:`~litefer.training.trainer` (the loop).

>>> from litefer.training import load_config, train
>>> cfg = load_config("configs/default_ferplus.yaml", overrides=["train.epochs=5"])
>>> result = train(cfg, out_dir="runs/try")
>>> result.best_checkpoint, result.history[-1]["val_acc"], result.test_metrics

``train`` is a pure API (no CLI state): evaluation, cross-validation and ablation runners
call it with a config (and optionally ready-made :class:`DataSplits`) and get paths,
history and metrics back.
"""
from litefer.training.config import (
    AugConfig, ConfigError, DataConfig, LossConfig, ModelConfig, OptimConfig, SchedConfig, TrainConfig,
    TrainSection, apply_overrides, config_from_dict, dump_config, load_config,
)
from litefer.training.trainer import (
    DataSplits, LRSchedule, TrainingInterrupted, TrainResult, evaluate, metrics_from_confusion, prepare_data,
    synthetic_faces, train,
)

__all__ = [
    "AugConfig", "ConfigError", "DataConfig", "LossConfig", "ModelConfig", "OptimConfig", "SchedConfig",
    "TrainConfig", "TrainSection", "apply_overrides", "config_from_dict", "dump_config", "load_config",
    "DataSplits", "LRSchedule", "TrainingInterrupted", "TrainResult", "evaluate", "metrics_from_confusion",
    "prepare_data", "synthetic_faces", "train",
]
