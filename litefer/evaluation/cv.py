"""k-fold cross-validation: ``cross_validate(cfg, k) -> CVReport`` with mean ± std.

>>> from litefer.training import load_config
>>> rep = cross_validate(load_config("configs/ckplus.yaml"), folds=10, out_dir="runs/ck-cv")
>>> rep.summary["accuracy"]["mean"], rep.summary["accuracy"]["std"]

How the folds are made (from the config's ``data.train_split``, the *pool*):

- **subject-independent** when the data has subject ids (``FaceArrays.groups``): every
  subject's images fall in exactly one test fold (so no face is seen in training and in
  test).  The folds are the trainer's (:func:`litefer.training.trainer.subject_folds`,
  which uses :func:`litefer.data.splits.subject_kfold`), so fold ``i`` here is fold ``i``
  of ``litefer train --set data.folds=K data.fold=i``; the disjointness is checked.
- **stratified** otherwise (or with ``by_subject=False``): each class's images are
  shuffled with the seed and dealt round-robin into the ``k`` folds (class proportions
  equal across folds to within one image).

Each fold trains with :func:`litefer.training.train` on the other folds (minus
``data.exclude`` ids), selects its epoch on the config's validation split (a named split;
with ``data.val_by_subject`` a hold-out of whole subjects, as the trainer makes it; else a
stratified ``val_fraction`` hold-out of the training folds) and is then tested once
on its fold with :func:`litefer.evaluation.evaluate`.  The config each fold runs with is
the base config plus the overrides (``name`` gets ``-foldI``; for subject folds
``data.folds``/``data.fold`` are set, so each fold's ``config.yaml`` reproduces it).

Outputs in ``out_dir``: ``fold{i}/`` (the training run, and ``fold{i}/eval/`` with its
test report), ``cv.md`` (per-fold table and mean ± std), ``cv.csv``, ``cv.json`` and
``confusion.png`` (pooled over the test folds).  The std is the population standard
deviation over folds (ddof=0, numpy's default).  This is litefer's one cross-validation runner:
``litefer cv`` and ``litefer train`` on a config with ``data.folds`` both use it.
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np

from litefer.data.base import FaceArrays
from litefer.evaluation.metrics import compute_metrics, format_mean_std, summarize
from litefer.evaluation.report import markdown_table, pct, plot_confusion, write_csv, write_json

#: the fold metrics summarised as mean ± std
CV_METRICS = ("accuracy", "mean_class_acc", "macro_f1")


class CVError(ValueError):
    """Cross-validation is impossible as asked (too few subjects/images, bad fold index)."""


# ------------------------------------------------------------------------------ folds
def stratified_kfold(targets: Sequence[int], k: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """``k`` (train_idx, test_idx) pairs; every class dealt evenly across the folds."""
    y = np.asarray(targets)
    if k < 2:
        raise CVError(f"cross-validation needs at least 2 folds, got {k}")
    if len(y) < k:
        raise CVError(f"{len(y)} images cannot make {k} folds")
    rng = np.random.default_rng([int(seed), 0x57A7])
    fold_of = np.empty(len(y), np.int64)
    offset = 0
    for c in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == c))
        # continue dealing where the previous class stopped, so fold sizes stay balanced
        fold_of[members] = (offset + np.arange(len(members))) % k
        offset = (offset + len(members)) % k
    return [(np.flatnonzero(fold_of != f), np.flatnonzero(fold_of == f)) for f in range(k)]


def subject_kfold(groups: Sequence, k: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """``k`` subject-disjoint (train_idx, test_idx) pairs, the trainer's fold assignment."""
    from litefer.training.config import ConfigError
    from litefer.training.trainer import subject_folds

    g = np.asarray(groups)
    if k < 2:
        raise CVError(f"cross-validation needs at least 2 folds, got {k}")
    n_subjects = len(np.unique(g))
    if n_subjects < k:
        raise CVError(f"{n_subjects} subjects cannot make {k} subject-independent folds")
    folds = []
    for f in range(k):
        try:
            tr, te = subject_folds(g, k, int(seed), f)
        except ConfigError as exc:
            raise CVError(str(exc)) from None
        folds.append((np.asarray(tr, np.int64), np.asarray(te, np.int64)))
    check_folds(folds, len(g), g)
    return folds


def check_folds(folds: Sequence[tuple[np.ndarray, np.ndarray]], n: int, groups: Optional[Sequence] = None) -> None:
    """Raise :class:`CVError` unless the test folds partition ``range(n)``, each train set
    is the complement of its test fold, and (with ``groups``) no subject is in both."""
    seen = np.zeros(n, np.int64)
    g = None if groups is None else np.asarray(groups)
    for i, (tr, te) in enumerate(folds):
        seen[te] += 1
        if len(np.intersect1d(tr, te)) or len(tr) + len(te) != n:
            raise CVError(f"fold {i}: train and test indices overlap or miss images")
        if len(te) == 0:
            raise CVError(f"fold {i} has no test images")
        if g is not None:
            shared = np.intersect1d(g[tr], g[te])
            if len(shared):
                raise CVError(f"fold {i}: subjects {shared[:5].tolist()} are in both train and test")
    if not (seen == 1).all():
        raise CVError("the test folds do not partition the images")


def make_folds(arrays: FaceArrays, k: int, seed: int = 0,
               by_subject: Optional[bool] = None) -> tuple[list[tuple[np.ndarray, np.ndarray]], bool]:
    """(folds, by_subject): subject-independent when ``arrays.groups`` exist (unless
    ``by_subject=False``), stratified by class otherwise."""
    if by_subject is None:
        by_subject = arrays.groups is not None
    if by_subject:
        if arrays.groups is None:
            raise CVError(f"{arrays.name or 'the dataset'} has no subject ids; subject-independent folds are "
                          f"impossible (use stratified folds)")
        return subject_kfold(arrays.groups, k, seed), True
    folds = stratified_kfold(arrays.hard_targets, k, seed)
    check_folds(folds, len(arrays))
    return folds, False


# ------------------------------------------------------------------------------ results
@dataclass
class FoldResult:
    fold: int
    out_dir: Path
    n_train: int
    n_val: int
    n_test: int
    #: subjects in the test fold (None for stratified folds)
    test_subjects: Optional[int]
    best_epoch: int
    val_metrics: dict
    #: :func:`litefer.evaluation.metrics.compute_metrics` of the test fold
    metrics: dict
    train_result: Any = None
    #: per-image test predictions (dataset indices) for the pooled confusion matrix
    y_true: Optional[np.ndarray] = None
    y_pred: Optional[np.ndarray] = None
    seconds: float = 0.0


@dataclass
class CVReport:
    folds: list[FoldResult]
    #: metric -> {"mean", "std", "n", "values"}
    summary: dict
    #: compute_metrics over all test folds pooled
    pooled: dict
    by_subject: bool
    k: int
    labels: tuple[str, ...]
    out_dir: Optional[Path] = None
    files: dict = field(default_factory=dict)
    #: whether the data had subject ids (stratified folds were then asked for)
    had_subjects: bool = False

    def table_rows(self) -> list[list[Any]]:
        rows = []
        for f in self.folds:
            rows.append([f.fold, f.n_train, f.n_val, f.n_test, "—" if f.test_subjects is None else f.test_subjects,
                         f.best_epoch, pct(f.val_metrics.get("accuracy")), pct(f.metrics["accuracy"]),
                         pct(f.metrics["mean_class_acc"]), pct(f.metrics["macro_f1"])])
        return rows


CV_HEADERS = ["fold", "train", "val", "test", "test subjects", "best epoch", "val acc %", "test acc %",
              "mean class acc %", "macro F1 %"]


def _load_pool(cfg) -> FaceArrays:
    from litefer.training import trainer
    loader = getattr(trainer, "load_split", None) or trainer._load_split
    return loader(cfg, cfg.data.train_split, "train")


def _load_val(cfg) -> FaceArrays:
    from litefer.training import trainer
    loader = getattr(trainer, "load_split", None) or trainer._load_split
    return loader(cfg, cfg.data.val_split, "val")


def cross_validate(cfg, folds: Optional[int] = None, out_dir: str | Path | None = None, *,
                   arrays: Optional[FaceArrays] = None, overrides: Sequence[str] | None = None,
                   seed: Optional[int] = None, by_subject: Optional[bool] = None,
                   only: Optional[Sequence[int]] = None, max_epochs: Optional[int] = None,
                   tta: bool = False, quiet: bool = False,
                   log: Optional[Callable[[str], None]] = None,
                   train_fn: Optional[Callable] = None) -> CVReport:
    """Train and test every fold; see the module docstring.

    - ``folds``: k (default ``cfg.data.folds``); ``seed``: fold seed (default ``cfg.data.val_seed``).
    - ``arrays``: the pool (default: the config's ``data.train_split``).
    - ``overrides``: ``key=value`` strings applied to ``cfg`` first (as ``--set``).
    - ``only``: run just these fold indices (the summary covers those).
    - ``max_epochs``: cut every fold's training short (smoke tests).
    - ``train_fn``: the training function (default :func:`litefer.training.train`).
    """
    from litefer.evaluation.predict import evaluate
    from litefer.training import DataSplits, apply_overrides, train as _train
    from litefer.training.data import apply_teacher
    from litefer.training.trainer import read_exclude_list, stratified_holdout, subject_holdout

    train_fn = train_fn or _train
    say = log or (lambda msg: None)
    cfg = copy.deepcopy(cfg)
    if overrides:
        apply_overrides(cfg, list(overrides))
    k = int(folds if folds is not None else cfg.data.folds)
    if k < 2:
        raise CVError(f"cross-validation needs --folds >= 2 (got {k})")
    seed = cfg.data.val_seed if seed is None else int(seed)
    out = Path(out_dir) if out_dir is not None else Path(str(cfg.out_dir()) + "-cv")
    pool = arrays if arrays is not None else _load_pool(cfg)
    fold_idx, subj = make_folds(pool, k, seed, by_subject)
    run = sorted(set(range(k) if only is None else [int(i) for i in only]))
    bad = [i for i in run if not 0 <= i < k]
    if bad:
        raise CVError(f"fold indices {bad} are outside [0, {k})")
    excluded = read_exclude_list(cfg.data.exclude) if cfg.data.exclude else set()
    named_val = _load_val(cfg) if cfg.data.val_split else None
    if named_val is not None and tuple(named_val.labels) != tuple(pool.labels):
        raise CVError(f"validation labels {named_val.labels} differ from the pool's {pool.labels}")
    if named_val is not None and excluded:
        named_val = named_val.exclude(excluded)
    say(f"{k}-fold {'subject-independent' if subj else 'stratified'} cross-validation of {len(pool)} images "
        f"({pool.name or cfg.data.dataset} {pool.split or cfg.data.train_split}); out: {out}")
    if cfg.data.test_split:
        say(f"note: data.test_split {cfg.data.test_split!r} is not used; each fold is tested on its held-out fold")

    results: list[FoldResult] = []
    for i in run:
        t0 = time.perf_counter()
        tr, te = fold_idx[i]
        train_arr = pool.subset(tr)
        if excluded:
            train_arr = train_arr.exclude(excluded)
        test_arr = pool.subset(te, split=f"fold{i}")
        if named_val is not None:
            val_arr = named_val
            val_desc = cfg.data.val_split
        elif cfg.data.val_by_subject:
            if train_arr.groups is None:
                raise CVError(f"data.val_by_subject: {cfg.data.dataset!r} has no subject ids to hold out")
            a, b, kv = subject_holdout(train_arr.groups, cfg.data.val_fraction, cfg.data.val_seed, "cv")
            val_arr, train_arr = train_arr.subset(b, split="holdout"), train_arr.subset(a)
            val_desc = f"subject hold-out (1 of {kv} subject folds) of the training folds"
        else:
            a, b = stratified_holdout(train_arr.hard_targets, cfg.data.val_fraction, cfg.data.val_seed)
            val_arr, train_arr = train_arr.subset(b, split="holdout"), train_arr.subset(a)
            val_desc = f"stratified hold-out {cfg.data.val_fraction:g} of the training folds"
        train_arr, teacher = apply_teacher(cfg, train_arr)
        c = copy.deepcopy(cfg)
        c.name = f"{cfg.name}-fold{i}"
        c.data.test_split = None
        if subj:
            c.data.folds, c.data.fold = k, i
        else:
            c.notes = (c.notes + "\n" if c.notes else "") + f"stratified fold {i} of {k} (seed {seed})"
        info = {"dataset": cfg.data.dataset, "train_split": cfg.data.train_split, "folds": k, "fold": i,
                "fold_kind": "subject" if subj else "stratified", "fold_seed": seed,
                "val_split": val_desc, "test_split": f"fold {i} of {k}",
                "n_train": len(train_arr), "n_val": len(val_arr), "n_test": len(test_arr),
                "labels": list(pool.labels), **({"teacher": teacher} if teacher else {})}
        fold_dir = out / f"fold{i}"
        say(f"fold {i + 1}/{k}: {len(train_arr)} train / {len(val_arr)} val / {len(test_arr)} test images")
        res = train_fn(c, fold_dir, data=DataSplits(train_arr, val_arr, test_arr, info),
                       max_epochs=max_epochs, quiet=quiet)
        model = getattr(res, "model", None)
        if model is not None:
            ev = evaluate(model, test_arr, batch_size=c.train.eval_batch_size or 2 * c.train.batch_size, tta=tta,
                          device=next(model.parameters()).device, preprocess=res.preprocess, labels=res.labels,
                          out_dir=fold_dir / "eval", title=f"{cfg.name}: fold {i} of {k}")
        elif getattr(res, "best_checkpoint", None) is not None:
            ev = evaluate(res.best_checkpoint, test_arr, tta=tta, out_dir=fold_dir / "eval",
                          title=f"{cfg.name}: fold {i} of {k}")
        else:
            raise CVError(f"fold {i}: training produced no model (no finite validation metric?)")
        results.append(FoldResult(
            fold=i, out_dir=fold_dir, n_train=len(train_arr), n_val=len(val_arr), n_test=len(test_arr),
            test_subjects=len(np.unique(test_arr.groups)) if subj else None,
            best_epoch=int(getattr(res, "best_epoch", 0) or 0), val_metrics=dict(getattr(res, "best_metrics", {}) or {}),
            metrics=ev.metrics, train_result=res, y_true=ev.y_true, y_pred=ev.y_pred,
            seconds=time.perf_counter() - t0))
        say(f"fold {i + 1}/{k}: test acc {pct(ev.metrics['accuracy'])}%, mean class acc "
            f"{pct(ev.metrics['mean_class_acc'])}%, macro F1 {pct(ev.metrics['macro_f1'])}%")

    report = summarize_folds(results, k, subj, tuple(pool.labels))
    report.out_dir, report.had_subjects = out, pool.groups is not None
    write_cv_report(report, out, title=f"{cfg.name}: {k}-fold cross-validation", config=cfg)
    say(f"cross-validation: test acc {format_mean_std(report.summary['accuracy']['values'])} %")
    return report


def summarize_folds(results: Sequence[FoldResult], k: int, by_subject: bool, labels: tuple[str, ...]) -> CVReport:
    summary = {}
    for m in CV_METRICS:
        vals = [f.metrics[m] for f in results]
        summary[m] = {**summarize(vals), "values": vals}
    vals = [f.val_metrics.get("accuracy") for f in results]
    summary["val_acc"] = {**summarize(vals), "values": vals}
    if results and all(f.y_true is not None for f in results):
        pooled = compute_metrics(np.concatenate([f.y_true for f in results]),
                                 np.concatenate([f.y_pred for f in results]), labels)
    else:
        pooled = {}
    return CVReport(list(results), summary, pooled, by_subject, k, labels)


def cv_markdown(rep: CVReport, title: Optional[str] = None) -> str:
    s = rep.summary
    kind = "subject-independent (no subject in both training and test)" if rep.by_subject else \
        ("stratified by class (asked for; the data has subject ids, so a subject's images can be in "
         "both training and test)" if rep.had_subjects else "stratified by class (the data has no subject ids)")
    lines = [f"# {title or f'{rep.k}-fold cross-validation'}\n",
             f"- **folds**: {rep.k}, {kind}; {len(rep.folds)} run",
             f"- **test accuracy**: {format_mean_std(s['accuracy']['values'])} %",
             f"- **mean per-class accuracy**: {format_mean_std(s['mean_class_acc']['values'])} %",
             f"- **macro F1**: {format_mean_std(s['macro_f1']['values'])} %",
             "- mean ± std over folds; std is the population standard deviation (ddof=0)\n",
             "## Folds\n"]
    rows = rep.table_rows()
    rows.append(["mean ± std", "", "", sum(f.n_test for f in rep.folds), "", "",
                 format_mean_std(s["val_acc"]["values"]), format_mean_std(s["accuracy"]["values"]),
                 format_mean_std(s["mean_class_acc"]["values"]), format_mean_std(s["macro_f1"]["values"])])
    lines.append(markdown_table(CV_HEADERS, rows))
    if rep.pooled:
        p = rep.pooled
        lines.append("## Pooled over the test folds\n")
        lines.append(markdown_table(
            ["class", "support", "precision %", "recall %", "F1 %"],
            [(n, v["support"], pct(v["precision"]), pct(v["recall"]), pct(v["f1"])) for n, v in p["per_class"].items()]))
        lines.append(f"Pooled accuracy {pct(p['accuracy'])} %, mean per-class accuracy {pct(p['mean_class_acc'])} %.\n")
        lines.append("![pooled confusion matrix](confusion.png)\n")
    return "\n".join(lines)


def write_cv_report(rep: CVReport, out_dir: str | Path, title: Optional[str] = None, config=None) -> dict[str, Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = {}
    if rep.pooled:
        files["confusion.png"] = plot_confusion(rep.pooled["confusion"], rep.labels, out / "confusion.png",
                                                title=f"{title or 'cross-validation'} (pooled)",
                                                unmapped=rep.pooled["unmapped_per_class"])
    (out / "cv.md").write_text(cv_markdown(rep, title), encoding="utf-8")
    files["cv.md"] = out / "cv.md"
    csv_rows = [[f.fold, f.n_train, f.n_val, f.n_test, f.test_subjects, f.best_epoch, f.val_metrics.get("accuracy"),
                 f.metrics["accuracy"], f.metrics["mean_class_acc"], f.metrics["macro_f1"]] for f in rep.folds]
    for stat in ("mean", "std"):
        csv_rows.append([stat, "", "", "", "", "", rep.summary["val_acc"][stat],
                         *[rep.summary[m][stat] for m in CV_METRICS]])
    files["cv.csv"] = write_csv(out / "cv.csv", ["fold", "n_train", "n_val", "n_test", "test_subjects", "best_epoch",
                                                 "val_acc", "test_acc", "test_mean_class_acc", "test_macro_f1"],
                                csv_rows)
    files["cv.json"] = write_json(out / "cv.json", {
        "k": rep.k, "by_subject": rep.by_subject, "labels": list(rep.labels), "summary": rep.summary,
        "folds": [{"fold": f.fold, "out_dir": str(f.out_dir), "n_train": f.n_train, "n_val": f.n_val,
                   "n_test": f.n_test, "test_subjects": f.test_subjects, "best_epoch": f.best_epoch,
                   "val": f.val_metrics, "test": {m: f.metrics[m] for m in (*CV_METRICS, "n")},
                   "seconds": f.seconds} for f in rep.folds],
        "pooled": {k: rep.pooled[k] for k in ("n", "accuracy", "mean_class_acc", "macro_f1", "per_class", "confusion")}
        if rep.pooled else None,
        "config": config.to_dict() if config is not None else None,
    })
    rep.files = files
    return files
