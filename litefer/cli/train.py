"""``litefer train CONFIG [--set key=value ...] [--resume RUN] [--out DIR] [--budget 2h]``,
``litefer runs [DIR]`` and ``litefer curves RUN...``."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from litefer.cli._common import console, echo_json, fail


def register(app: typer.Typer) -> None:
    @app.command("train")
    def train_cmd(
        config: Path = typer.Argument(..., help="YAML config (see configs/), or a run folder to resume "
                                                "(its config.yaml and last.pt)."),
        set_: Optional[list[str]] = typer.Option(None, "--set", "-s", metavar="KEY=VALUE",
                                                 help="Override a config value, e.g. --set optim.lr=0.01 "
                                                      "(repeatable; dotted keys; YAML values)."),
        resume: Optional[Path] = typer.Option(None, "--resume", help="Continue a stopped run exactly where it "
                                                                     "stopped (mid-epoch included): its last.pt "
                                                                     "or its run folder."),
        out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output folder (default: the config's "
                                                                       "`out`, runs/<name>)."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Train into an output folder that already "
                                                                  "holds a run (its files are replaced)."),
        fold: Optional[str] = typer.Option(None, "--fold", help="With data.folds: one fold index (written to "
                                                                "OUT/fold<K>), or 'all' (default) to train "
                                                                "every fold (OUT/fold<K> and OUT/cv.json)."),
        budget: Optional[str] = typer.Option(None, "--budget", metavar="DURATION",
                                             help="Fit the run into this wall time (e.g. 2h, 90m, 1h30m): the "
                                                  "speed here is measured before the first step and the epochs "
                                                  "(at most the config's) sized to it; same as --set "
                                                  "train.budget_hours=H."),
        no_progress: bool = typer.Option(False, "--no-progress", help="No progress bars (epoch lines only)."),
        print_config: bool = typer.Option(False, "--print-config", help="Print the resolved config and exit."),
    ) -> None:
        """Train a model as CONFIG describes; writes best.pt, last.pt, metrics.csv,
        config.yaml and result.json to the output folder and prints a JSON summary on stdout.
        Multi-GPU: run the same command under torchrun:
        torchrun --nproc_per_node=N "$(command -v litefer)" train CONFIG."""
        from litefer.training.config import ConfigError, dump_config, load_config
        overrides = list(set_ or [])
        if config.is_dir():                          # a run folder: resume it with its own config
            if not (config / "config.yaml").is_file():
                raise fail(f"{config} is a folder without config.yaml (not a run folder)")
            if resume is None and (config / "last.pt").is_file():
                resume = config            # else: stopped before its first step, start it afresh
            if out is None:
                out = config
            config = config / "config.yaml"
        if no_progress:
            overrides.append("train.progress=false")
        if budget is not None:
            from litefer.training.budget import parse_duration
            try:
                overrides.append(f"train.budget_hours={parse_duration(budget)!r}")
            except ValueError as exc:
                raise fail(f"--budget: {exc}")
        try:
            cfg = load_config(config, overrides)
        except ConfigError as exc:
            raise fail(str(exc))
        if print_config:
            typer.echo(dump_config(cfg), nl=False)
            return
        if out is None and resume is not None:       # continue in the folder of the checkpoint
            out = resume if resume.is_dir() else resume.parent
        out_dir = out if out is not None else cfg.out_dir()
        all_folds = bool(cfg.data.folds) and cfg.data.fold is None and fold in (None, "all")
        if fold not in (None, "all"):
            if not cfg.data.folds:
                raise fail("--fold needs a config with data.folds")
            try:
                cfg.data.fold = int(fold)
            except ValueError:
                raise fail(f"--fold must be an integer or 'all', got {fold!r}") from None
            if not 0 <= cfg.data.fold < cfg.data.folds:
                raise fail(f"--fold {fold}: must be in [0, {cfg.data.folds})")
            out_dir = out_dir / f"fold{cfg.data.fold}"     # the same tree as training all folds
        if all_folds and resume is not None:
            raise fail("--resume continues one fold: add --fold K")
        existing = out_dir / ("fold0" if all_folds else "") / "last.pt"
        if resume is None and not overwrite and existing.exists():
            raise fail(f"{existing.parent} already holds a run (last.pt); pass --resume {existing} "
                       f"to continue it, --overwrite to replace it, or --out for another folder")
        if resume is not None and resume.is_dir():
            if not (resume / "last.pt").is_file():
                raise fail(f"--resume {resume}: the folder holds no last.pt")
            resume = resume / "last.pt"
        if resume is not None and not resume.is_file():
            raise fail(f"--resume {resume}: no such file")

        from litefer.data.base import DatasetError
        from litefer.models.checkpoint import CheckpointError
        from litefer.training import trainer
        import signal as _signal
        try:
            if all_folds:                             # the one CV runner (also `litefer cv`)
                from litefer.evaluation.cv import CVError, cross_validate
                try:
                    rep = cross_validate(cfg, cfg.data.folds, out_dir,
                                         log=lambda m: console.print(m, highlight=False, soft_wrap=True))
                except CVError as exc:
                    raise fail(str(exc))
                acc = rep.summary["accuracy"]
                console.print(f"{cfg.data.folds}-fold CV: test accuracy {acc['mean']:.4f} ± {acc['std']:.4f}",
                              highlight=False)
                echo_json({"out_dir": str(out_dir), "folds": cfg.data.folds, "test_acc_mean": acc["mean"],
                           "test_acc_std": acc["std"], "per_fold_acc": acc["values"],
                           "test_mean_class_acc_mean": rep.summary["mean_class_acc"]["mean"]})
                return
            res = trainer.train(cfg, out_dir, resume=resume)
        except (ConfigError, DatasetError, CheckpointError) as exc:
            raise fail(str(exc))
        except FloatingPointError as exc:
            raise fail(str(exc), code=1)
        except trainer.TrainingInterrupted as exc:
            where = exc.checkpoint.parent if exc.checkpoint is not None else out_dir
            what = ("checkpoint written. Continue with" if exc.checkpoint is not None else
                    "stopped before the first training step, nothing to save. Start it again with")
            console.print(f"[yellow]interrupted[/] ({_signal.Signals(exc.signum).name}) at epoch {exc.epoch + 1}, "
                          f"iteration {exc.iteration}; {what}:\n"
                          f"  litefer train {where}", highlight=False, soft_wrap=True)
            raise typer.Exit(128 + int(exc.signum))
        except KeyboardInterrupt:
            console.print(f"[yellow]interrupted[/]; continue from the last checkpoint with: litefer train "
                          f"{out_dir}", highlight=False, soft_wrap=True)
            raise typer.Exit(130)
        echo_json({
            "out_dir": str(res.out_dir),
            "best_checkpoint": str(res.best_checkpoint) if res.best_checkpoint else None,
            "last_checkpoint": str(res.last_checkpoint) if res.last_checkpoint else None,
            "best_epoch": res.best_epoch, "epochs_run": len(res.history), "stopped_early": res.stopped_early,
            "val_acc": res.best_metrics.get("accuracy"),
            "test_acc": res.test_metrics["accuracy"] if res.test_metrics else None,
        })


    @app.command("runs")
    def runs_cmd(
        folder: Path = typer.Argument(Path("runs"), help="Folder to search for runs (recursively)."),
        as_json: bool = typer.Option(False, "--json", help="One JSON object per run on stdout."),
    ) -> None:
        """List training runs: model, data, epoch / of, best validation so far, images/s,
        ETA and state (running / stopped / finished / failed)."""
        from litefer.training.runs import format_eta, list_runs
        if not folder.is_dir():
            raise fail(f"{folder}: no such folder")
        runs = list_runs(folder)
        if as_json:
            for r in runs:
                echo_json(r.to_dict())
            return
        if not runs:
            console.print(f"no runs under {folder}", highlight=False)
            return
        from rich.table import Table
        t = Table(box=None, pad_edge=False)
        for col in ("run", "model", "data", "epoch", "best val", "img/s", "ETA", "state"):
            t.add_column(col, justify="right" if col in ("epoch", "best val", "img/s", "ETA") else "left")
        for r in runs:
            try:
                name = str(r.path.relative_to(folder)) if r.path != folder else str(folder)
            except ValueError:
                name = str(r.path)
            ep = "—" if r.epoch is None else f"{r.epoch:.1f}" + (f"/{r.epochs}" if r.epochs else "")
            best = "—" if r.best_value is None else (
                f"{100 * r.best_value:.2f} %" if (r.monitor or "val_acc") != "val_loss" else f"{r.best_value:.4f}")
            if r.best_epoch:
                best += f" @{r.best_epoch}"
            ips = "—" if not r.images_per_s else f"{r.images_per_s:.0f}"
            state = r.state + (f" ({r.note})" if r.note else "")
            t.add_row(name, r.arch or "—", r.data or "—", ep, best, ips, format_eta(r.eta_s), state)
        from rich.console import Console
        out_console = Console()
        if not out_console.is_terminal:          # piped: never truncate the columns
            out_console = Console(width=400)
        out_console.print(t)


    @app.command("curves")
    def curves_cmd(
        runs: list[Path] = typer.Argument(..., help="Run folders (or their metrics.csv); running runs too."),
        plot: Optional[Path] = typer.Option(None, "--plot", help="Write accuracy / loss / learning-rate "
                                            "curves of all RUNs to this PNG."),
        every: Optional[int] = typer.Option(None, "--every", min=1, help="A table row every N epochs "
                                            "(default: about 16 rows; the best and last epochs always)."),
        title: Optional[str] = typer.Option(None, "--title", help="The figure's title (default: the run names)."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --plot file."),
        stages: bool = typer.Option(False, "--stages", help="Also show the runs each RUN was continued from "
                                    "(its model.init_from naming another run's best.pt), and count epochs "
                                    "from the first stage."),
    ) -> None:
        """Learning curves of training runs: a markdown table per run on stdout (the best
        epoch in bold), and with --plot one figure of them all."""
        from litefer.evaluation.curves import CurveError, curve_table, plot_curves, read_curve, read_stages
        if plot is not None and plot.exists() and not overwrite:
            raise fail(f"{plot} exists; pass --overwrite to replace it")
        try:
            if stages:
                curves, seen = [], set()
                for r in runs:
                    for c in read_stages(r):
                        if c.path.resolve() not in seen:
                            seen.add(c.path.resolve())
                            curves.append(c)
            else:
                curves = [read_curve(r) for r in runs]
        except CurveError as exc:
            raise fail(str(exc))
        for c in curves:
            b = c.best_row
            best = "no best epoch flagged" if b is None or b["val_acc"] is None else \
                f"best epoch {b['epoch']} (kept as best.pt): validation accuracy {100 * b['val_acc']:.2f} %"
            epochs = f"{len(c.rows)} epoch{'s' if len(c.rows) != 1 else ''}"
            start = (f"; started from {c.parent.name}'s best.pt (epoch {c.parent.best_epoch}), so its epoch 1 "
                     f"is epoch {c.offset + 1} of all stages") if c.parent is not None else ""
            sys.stdout.write(f"## {c.name}\n\n{epochs}, {c.minutes:.0f} min of training, {best}{start}\n\n"
                             f"{curve_table(c, every)}\n")
        if plot is not None:
            console.print(f"wrote {plot_curves(curves, plot, title=title)}", highlight=False)
