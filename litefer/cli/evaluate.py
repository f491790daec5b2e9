"""``litefer evaluate``, ``litefer cv`` and ``litefer ablate``: measuring models."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from litefer.cli._common import console, echo_json, fail, parse_opts


def read_id_list(path: Path) -> set[str]:
    """Image ids from a text file: one per line, ``#`` comments, the first CSV column."""
    ids = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            ids.add(line.split(",")[0].strip())
    return ids


def load_eval_data(dataset: str, root: Optional[Path], split: str, opts: dict):
    """FaceArrays for ``litefer evaluate``; ``synthetic`` gives the trainer's stand-in images
    (options n, num_classes, size, channels, seed, noise)."""
    if dataset == "synthetic":
        from litefer.training.trainer import synthetic_faces
        known = {"n", "num_classes", "size", "channels", "seed", "noise"}
        bad = set(opts) - known
        if bad:
            raise fail(f"unknown synthetic option(s) {sorted(bad)}; known: {', '.join(sorted(known))}")
        return synthetic_faces(int(opts.get("n", 256)), int(opts.get("num_classes", 7)), int(opts.get("size", 48)),
                               int(opts.get("channels", 1)), seed=int(opts.get("seed", 3)),
                               noise=float(opts.get("noise", 40.0)), split=split)
    try:
        from litefer.data import load_dataset
    except ImportError as exc:
        raise fail(f"the dataset readers are not available: {exc}")
    from litefer.data.base import DatasetError
    try:
        return load_dataset(dataset, root=str(root) if root is not None else None, split=split, **opts)
    except (DatasetError, KeyError, TypeError, ValueError) as exc:
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        raise fail(f"cannot load {dataset!r} split {split!r}: {msg}")


def _print_result(res) -> None:
    from rich.table import Table
    from litefer.evaluation.report import pct
    m = res.metrics
    if m.get("label_mapping"):
        console.print(f"[yellow]label mapping:[/] {m['label_mapping']}", highlight=False)
    t = Table(title=f"{res.dataset} / {res.split}: {m['n']} images{' (flip TTA)' if res.tta else ''}")
    for h in ("class", "support", "precision %", "recall %", "F1 %"):
        t.add_column(h, justify="left" if h == "class" else "right")
    for name, v in m["per_class"].items():
        t.add_row(name, str(v["support"]), pct(v["precision"]), pct(v["recall"]), pct(v["f1"]))
    console.print(t)
    line = (f"accuracy [bold]{pct(m['accuracy'])}%[/]  mean per-class accuracy {pct(m['mean_class_acc'])}%  "
            f"macro F1 {pct(m['macro_f1'])}%")
    if m["unmapped_predictions"]:
        line += f"  unmapped predictions {m['unmapped_predictions']}"
    console.print(line, highlight=False)


def register(app: typer.Typer) -> None:
    @app.command("evaluate")
    def evaluate_cmd(
        checkpoint: str = typer.Argument(..., help="Checkpoint (.pt/.safetensors) or bundled model name."),
        dataset: str = typer.Option(..., "--dataset", help="Dataset reader name (fer2013, ferplus, rafdb, ...) "
                                                           "or 'synthetic'."),
        split: str = typer.Option(..., "--split", help="Split to evaluate (e.g. privatetest, test)."),
        root: Optional[Path] = typer.Option(None, "--root", help="Dataset folder (default: under $LITEFER_DATA)."),
        tta: bool = typer.Option(False, "--tta", help="Average the probabilities of each image and its mirror."),
        out: Optional[Path] = typer.Option(None, "--out", help="Write report.md, metrics.json, confusion.png, "
                                                               "predictions.csv here."),
        exclude: Optional[Path] = typer.Option(None, "--exclude", help="Text file of image ids to leave out "
                                                                       "(one per line, # comments)."),
        batch_size: int = typer.Option(64, "--batch-size", min=1, help="Images per forward pass."),
        device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
        unmapped: str = typer.Option("error", "--unmapped", help="Model classes the dataset lacks (e.g. FER+ "
                                     "contempt on FER2013): 'error' counts such predictions wrong; 'restrict' "
                                     "takes the argmax over the shared classes only."),
        opt: List[str] = typer.Option([], "--opt", help="Reader option key=value (repeatable), e.g. "
                                                        "label_mode=majority."),
        as_json: bool = typer.Option(False, "--json", help="Print the summary metrics as one JSON line."),
    ) -> None:
        """Measure a checkpoint on a dataset split: accuracy, macro F1, per-class metrics, confusion matrix."""
        from litefer.evaluation import LabelMismatchError, evaluate
        from litefer.evaluation.metrics import UNMAPPED_POLICIES
        from litefer.models.checkpoint import CheckpointError

        if unmapped not in UNMAPPED_POLICIES:
            raise fail(f"--unmapped must be one of {', '.join(UNMAPPED_POLICIES)}, not {unmapped!r}")
        ids: set[str] = set()
        if out is not None:
            from litefer.pathguard import OutputPathError, check_output_folder
            try:  # not under a file, not in /proc or /sys, no folder where a report file goes
                check_output_folder(out, [], writes=("report.md", "metrics.json", "confusion.png", "predictions.csv"))
            except OutputPathError as exc:
                raise fail(str(exc))
        if exclude is not None:
            if not exclude.is_file():
                raise fail(f"--exclude {exclude}: no such file")
            ids = read_id_list(exclude)
        arrays = load_eval_data(dataset, root, split, parse_opts(opt))
        n0 = len(arrays)
        if ids:
            arrays = arrays.exclude(ids)
            dropped = n0 - len(arrays)
            if dropped == 0:
                console.print(f"[yellow]warning:[/] none of the {len(ids)} ids in {exclude} is in "
                              f"{dataset}/{split} (ids look like {arrays.ids[0]!r})", highlight=False)
            else:
                console.print(f"excluded {dropped} of {n0} images listed in {exclude}", highlight=False)
        try:
            res = evaluate(checkpoint, arrays, batch_size=batch_size, tta=tta, device=device, unmapped=unmapped,
                           out_dir=out)
        except (CheckpointError, LabelMismatchError) as exc:
            raise fail(str(exc))
        except ValueError as exc:
            raise fail(f"cannot evaluate {checkpoint}: {exc}")
        if ids:
            res.metrics["excluded"] = n0 - len(arrays)
        _print_result(res)
        if out is not None:
            console.print(f"report: {out / 'report.md'}", highlight=False)
        if as_json:
            echo_json({**res.summary(), "tta": tta, "dataset": dataset, "split": split,
                       "out": str(out) if out is not None else None})

    @app.command("cv")
    def cv_cmd(
        config: Path = typer.Argument(..., help="Training config (YAML)."),
        folds: Optional[int] = typer.Option(None, "--folds", min=2, help="Number of folds (default: data.folds)."),
        set_: List[str] = typer.Option([], "--set", "-s", metavar="KEY=VALUE",
                                       help="Config override, e.g. optim.lr=0.01 (repeatable)."),
        out: Optional[Path] = typer.Option(None, "--out", help="Output folder (default: the config's out + '-cv')."),
        seed: Optional[int] = typer.Option(None, "--seed", help="Fold seed (default: data.val_seed)."),
        stratified: bool = typer.Option(False, "--stratified", help="Stratified folds even when subject ids exist."),
        fold: List[int] = typer.Option([], "--fold", help="Run only this fold index (repeatable)."),
        max_epochs: Optional[int] = typer.Option(None, "--max-epochs", min=1, help="Cut each fold's training short."),
        tta: bool = typer.Option(False, "--tta", help="Flip TTA when testing each fold."),
        quiet: bool = typer.Option(False, "--quiet", help="No per-epoch log lines."),
    ) -> None:
        """k-fold cross-validation (subject-independent when the data has subject ids); mean ± std table."""
        from litefer.evaluation.cv import CVError, cross_validate
        from litefer.evaluation.metrics import format_mean_std
        from litefer.training.config import ConfigError, load_config

        try:
            cfg = load_config(config, list(set_))
            k = folds if folds is not None else cfg.data.folds
            if not k or k < 2:
                raise fail("give --folds K (K >= 2) or set data.folds in the config")
            rep = cross_validate(cfg, k, out, seed=seed, by_subject=False if stratified else None,
                                 only=fold or None, max_epochs=max_epochs, tta=tta, quiet=quiet,
                                 log=lambda m: console.print(m, highlight=False))
        except (ConfigError, CVError) as exc:
            raise fail(str(exc))
        s = rep.summary
        console.print(f"test accuracy {format_mean_std(s['accuracy']['values'])} %, mean per-class accuracy "
                      f"{format_mean_std(s['mean_class_acc']['values'])} %, macro F1 "
                      f"{format_mean_std(s['macro_f1']['values'])} % over {len(rep.folds)} fold(s); "
                      f"table: {rep.files['cv.md']}", highlight=False)

    @app.command("ablate")
    def ablate_cmd(
        spec: Path = typer.Argument(..., help="Ablation spec (YAML: base, variants, optional set/folds/out)."),
        out: Optional[Path] = typer.Option(None, "--out", help="Output folder (default: the spec's out)."),
        only: List[str] = typer.Option([], "--only", help="Run only this variant (repeatable)."),
        set_: List[str] = typer.Option([], "--set", "-s", metavar="KEY=VALUE",
                                       help="Override applied to every variant (repeatable)."),
        no_reuse: bool = typer.Option(False, "--no-reuse", help="Retrain variants that already finished."),
        max_epochs: Optional[int] = typer.Option(None, "--max-epochs", min=1, help="Cut each run short."),
        quiet: bool = typer.Option(False, "--quiet", help="No per-epoch log lines."),
    ) -> None:
        """Train the variants of an ablation spec and write one comparison table (markdown + CSV)."""
        from litefer.evaluation.ablation import AblationError, run_ablation
        from litefer.evaluation.cv import CVError
        from litefer.training.config import ConfigError

        try:
            res = run_ablation(spec, out, only=only or None, overrides=list(set_), reuse=not no_reuse,
                               max_epochs=max_epochs, quiet=quiet, log=lambda m: console.print(m, highlight=False))
        except (AblationError, ConfigError, CVError) as exc:
            raise fail(str(exc))
        sys_out = res.files["ablation.md"].read_text(encoding="utf-8")
        typer.echo(sys_out)
        console.print(f"table: {res.files['ablation.md']} and {res.files['ablation.csv']}", highlight=False)
