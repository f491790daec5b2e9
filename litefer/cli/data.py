"""``litefer data``: inspect, audit and cache datasets.

    litefer data list
    litefer data info fer2013 --split train
    litefer data audit fer2013 --out runs/audit-fer2013
    litefer data align rafdb --split train --split test
    litefer data cache --clear
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import List, Optional

import typer

from litefer.cli._common import console, echo_json, fail, parse_opts

data_app = typer.Typer(help="Dataset readers: list, inspect, audit (duplicates, leakage, blanks), align, cache.",
                       no_args_is_help=True, add_completion=False)


def _load(dataset: str, root: Optional[Path], split: Optional[str], opts: dict):
    from litefer.data import load_dataset
    from litefer.data.base import DatasetError
    try:
        return load_dataset(dataset, root=str(root) if root is not None else None, split=split, **opts)
    except (DatasetError, KeyError, TypeError, ValueError) as exc:
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        raise fail(f"cannot load {dataset!r} split {split!r}: {msg}")


def _splits_for(dataset: str, root: Optional[Path], splits: List[str]) -> list[Optional[str]]:
    from litefer.data import STANDARD_SPLITS, canonical_name
    if splits:
        return list(splits)
    try:
        name = canonical_name(dataset)
    except KeyError as exc:
        raise fail(str(exc.args[0]))
    if name in STANDARD_SPLITS:
        return list(STANDARD_SPLITS[name])
    if name == "folder" and root is not None and root.is_dir():
        from litefer.data.cache import IMAGE_EXTS
        subs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        nested = [p for p in subs if any(q.is_dir() for q in p.iterdir())]
        flat_imgs = any(q.suffix.lower() in IMAGE_EXTS for p in subs for q in p.iterdir())
        if nested and not flat_imgs:
            return [p.name for p in nested]
    return [None]


def register(app: typer.Typer) -> None:
    app.add_typer(data_app, name="data")


@data_app.command("list")
def list_cmd() -> None:
    """The dataset readers, their default folders and standard splits."""
    from rich.table import Table
    from litefer.data import DATASET_FOLDERS, STANDARD_SPLITS, dataset_root, list_datasets
    t = Table(title="litefer datasets")
    for h in ("name", "default folder", "present", "standard splits"):
        t.add_column(h)
    for name in list_datasets():
        folder = DATASET_FOLDERS.get(name)
        present = ""
        if folder:
            present = "yes" if dataset_root(name).exists() else "no"
        t.add_row(name, str(dataset_root(name)) if folder else "(pass --root)", present,
                  ", ".join(STANDARD_SPLITS.get(name, ())) or "-")
    console.print(t)


@data_app.command("info")
def info_cmd(
    dataset: str = typer.Argument(..., help="Reader name (fer2013, ferplus, rafdb, affectnet, ckplus, folder)."),
    root: Optional[Path] = typer.Option(None, "--root", help="Dataset folder (default: under $LITEFER_DATA)."),
    split: List[str] = typer.Option([], "--split", help="Split(s) to load (repeatable; default: the standard ones)."),
    opt: List[str] = typer.Option([], "--opt", help="Reader option key=value (repeatable), e.g. num_classes=7."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON line per split."),
) -> None:
    """Load split(s) and print counts per class, image shape, skipped images and load time."""
    from rich.table import Table
    opts = parse_opts(opt)
    for sp in _splits_for(dataset, root, split):
        t0 = time.perf_counter()
        a = _load(dataset, root, sp, opts)
        dt = time.perf_counter() - t0
        if as_json:
            echo_json({"dataset": dataset, "split": a.split, "n": len(a), "shape": list(a.images.shape[1:]),
                       "class_counts": a.class_counts(), "skipped": a.skipped.counts, "seconds": round(dt, 3)})
            continue
        t = Table(title=f"{dataset} / {a.split}: {len(a)} images {tuple(a.images.shape[1:])} ({dt:.2f} s)")
        t.add_column("class")
        t.add_column("images", justify="right")
        for k, v in a.class_counts().items():
            t.add_row(k, str(v))
        console.print(t)
        if a.skipped.counts:
            console.print(f"skipped: {a.skipped}", highlight=False)


@data_app.command("audit")
def audit_cmd(
    dataset: str = typer.Argument(..., help="Reader name (fer2013, ferplus, rafdb, affectnet, ckplus, folder)."),
    root: Optional[Path] = typer.Option(None, "--root", help="Dataset folder (default: under $LITEFER_DATA)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Write audit.md, audit.json and exclude.txt here "
                                                           "(default: runs/audit-DATASET)."),
    split: List[str] = typer.Option([], "--split", help="Split(s) to audit together (repeatable; default: "
                                                        "the dataset's standard splits)."),
    opt: List[str] = typer.Option([], "--opt", help="Reader option key=value (repeatable)."),
    near: bool = typer.Option(True, "--near/--no-near", help="Look for near duplicates (perceptual hash)."),
    exclude_near: bool = typer.Option(True, "--exclude-near/--keep-near", help="Put near-duplicate copies in "
                                                                               "the exclusion list."),
    near_bits: int = typer.Option(4, "--near-bits", min=0, max=16, help="Max dHash bits that differ."),
    near_diff: float = typer.Option(0.25, "--near-diff", min=0.0, help="Max mean abs. difference of the "
                                                                       "standardised 16x16 thumbnails."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as one JSON line."),
) -> None:
    """Find exact and near duplicates (within and across splits), blank images and likely non-faces,
    report class balance, and write an exclusion list (ids, one per line)."""
    from rich.table import Table
    from litefer.data.audit import audit
    opts = parse_opts(opt)
    splits = _splits_for(dataset, root, split)
    arrays = {}
    for sp in splits:
        a = _load(dataset, root, sp, opts)
        arrays[sp or a.split or "all"] = a
    t0 = time.perf_counter()
    rep = audit(arrays, dataset=dataset, near=near, exclude_near=exclude_near, near_bits=near_bits,
                near_diff=near_diff)
    dt = time.perf_counter() - t0
    out = out if out is not None else Path("runs") / f"audit-{dataset}"
    paths = rep.write(out)
    s = rep.summary
    t = Table(title=f"audit of {dataset} ({', '.join(arrays)}; {s['images']} images, {dt:.1f} s)")
    t.add_column("finding")
    t.add_column("count", justify="right")
    for k in ("exact_duplicate_groups", "images_in_exact_groups", "exact_groups_with_conflicting_labels",
              "exact_groups_across_splits", "near_duplicate_groups", "images_in_near_groups",
              "near_constant_images", "low_contrast_images", "dominant_value_images", "excluded_ids"):
        t.add_row(k.replace("_", " "), str(s[k]))
    for k, v in s["exact_groups_shared_between_splits"].items():
        t.add_row(f"exact groups shared: {k}", str(v))
    console.print(t)
    console.print(f"report: {paths['markdown']}  json: {paths['json']}  exclusion list: {paths['exclude']}",
                  highlight=False)
    if as_json:
        echo_json({"dataset": dataset, "summary": s, **{k: str(v) for k, v in paths.items()}})


@data_app.command("cache")
def cache_cmd(clear: bool = typer.Option(False, "--clear", help="Delete every cached dataset array.")) -> None:
    """Show (or clear) the decoded-image cache ($LITEFER_CACHE or ~/.cache/litefer)."""
    from litefer.data.cache import cache_dir, cache_entries, clear_cache
    if clear:
        n, size = clear_cache()
        console.print(f"removed {n} cache entries ({size / 2**20:.1f} MiB) from {cache_dir() / 'data'}",
                      highlight=False)
        return
    entries = cache_entries()
    total = sum(p.stat().st_size for p in entries)
    console.print(f"{cache_dir() / 'data'}: {len(entries)} entries, {total / 2**20:.1f} MiB", highlight=False)


@data_app.command("align")
def align_cmd(
    dataset: str = typer.Argument(..., help="Reader name (fer2013, ferplus, rafdb, affectnet, ckplus, folder)."),
    root: Optional[Path] = typer.Option(None, "--root", help="Dataset folder (default: under $LITEFER_DATA)."),
    split: List[str] = typer.Option([], "--split", help="Split(s) to align (repeatable; default: the standard ones)."),
    opt: List[str] = typer.Option([], "--opt", help="Reader option key=value (repeatable)."),
    crop: str = typer.Option("aligned112", "--crop", help="aligned112 (ArcFace 5-point template) or fer."),
    size: Optional[int] = typer.Option(None, "--size", min=16, help="Crop size (default 112 / 48 by crop)."),
    detector: str = typer.Option("auto", "--detector", help="Face detector (see docs/detectors.md)."),
    missing: str = typer.Option("box", "--missing", help="Images without a face: box (crop the whole image) "
                                                         "or drop."),
    out: Optional[Path] = typer.Option(None, "--out", help="Write the report and the ids without a face here "
                                                           "(default: runs/align-DATASET)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON line per split."),
) -> None:
    """Detect and 5-point-align every face of a dataset as `litefer predict` crops photos, cache the
    crops once (configs use them with data.align: true), and report the images where no face was found."""
    from litefer.data.align import MISSING, align_arrays
    from litefer.vision.align import CROPS
    from litefer.vision.detect import DetectorUnavailable
    if crop not in CROPS:
        raise fail(f"--crop {crop!r}: expected one of {', '.join(CROPS)}")
    if missing not in MISSING:
        raise fail(f"--missing {missing!r}: expected one of {', '.join(MISSING)}")
    opts = parse_opts(opt)
    out = out if out is not None else Path("runs") / f"align-{dataset}"
    for sp in _splits_for(dataset, root, split):
        a = _load(dataset, root, sp, opts)
        with console.status(f"aligning {dataset}/{a.split or sp} ({len(a)} images)") as status:
            def progress(i, n, _s=status, _sp=a.split or sp):
                if i % 200 == 0 or i == n:
                    _s.update(f"aligning {dataset}/{_sp}: {i}/{n}")
            try:
                _, rep = align_arrays(a, detector=detector, crop=crop, size=size, missing=missing,
                                      progress=progress, dataset=dataset)
            except (DetectorUnavailable, KeyError, ValueError) as exc:
                msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
                raise fail(f"cannot align {dataset!r} split {sp!r}: {msg}")
        paths = rep.write(out)
        if as_json:
            echo_json({**rep.to_dict(), "not_found": len(rep.not_found),
                       "report": str(paths["json"]), "not_found_ids": str(paths["not_found"])})
            continue
        console.print(rep.summary() + (" (cached)" if rep.cached else f" ({rep.seconds:.1f} s)"), highlight=False)
        console.print(f"report: {paths['json']}  ids without a face: {paths['not_found']}", highlight=False)
