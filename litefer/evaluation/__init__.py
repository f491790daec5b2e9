"""Evaluation: metrics, batched inference with optional flip TTA, reports, cross-validation
and ablation studies.

>>> from litefer.evaluation import evaluate
>>> res = evaluate("runs/x/best.pt", arrays, tta=True, out_dir="runs/x/eval")
>>> res.metrics["accuracy"], res.metrics["macro_f1"], res.metrics["per_class"]["fear"]["recall"]

>>> from litefer.evaluation import cross_validate, run_ablation
>>> rep = cross_validate(cfg, folds=10, out_dir="runs/ck-cv")     # mean ± std in rep.summary
>>> run_ablation("configs/ablations/losses.yaml")                  # ablation.md / .csv

Submodules: :mod:`~litefer.evaluation.metrics` (conventions, label mapping by name),
:mod:`~litefer.evaluation.predict`, :mod:`~litefer.evaluation.report`,
:mod:`~litefer.evaluation.cv`, :mod:`~litefer.evaluation.ablation`,
:mod:`~litefer.evaluation.selection` (ensembles), :mod:`~litefer.evaluation.curves` (learning curves).
"""
from litefer.evaluation.metrics import (
    LabelMapping, LabelMismatchError, accuracy, compute_metrics, confusion_matrix, format_mean_std,
    macro_f1, map_labels, mean_class_accuracy, normalize_confusion, summarize,
)
from litefer.evaluation.predict import EvalResult, evaluate, load_for_eval, predict_proba
from litefer.evaluation.report import markdown_report, markdown_table, plot_confusion, write_report
from litefer.evaluation.cv import (
    CVError, CVReport, FoldResult, cross_validate, make_folds, stratified_kfold, subject_kfold,
)
from litefer.evaluation.ablation import AblationError, AblationResult, AblationSpec, load_spec, run_ablation

__all__ = [
    "LabelMapping", "LabelMismatchError", "accuracy", "compute_metrics", "confusion_matrix", "format_mean_std",
    "macro_f1", "map_labels", "mean_class_accuracy", "normalize_confusion", "summarize",
    "EvalResult", "evaluate", "load_for_eval", "predict_proba",
    "markdown_report", "markdown_table", "plot_confusion", "write_report",
    "CVError", "CVReport", "FoldResult", "cross_validate", "make_folds", "stratified_kfold", "subject_kfold",
    "AblationError", "AblationResult", "AblationSpec", "load_spec", "run_ablation",
]
