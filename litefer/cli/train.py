"""``litefer train CONFIG [--set key=value ...] [--resume PATH] [--out DIR]``."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from litefer.cli._common import console, echo_json, fail


def register(app: typer.Typer) -> None:
    @app.command("train")
    def train_cmd(
        config: Path = typer.Argument(..., help="YAML config (see configs/)."),
        set_: Optional[list[str]] = typer.Option(None, "--set", "-s", metavar="KEY=VALUE",
                                                 help="Override a config value, e.g. --set optim.lr=0.01 "
                                                      "(repeatable; dotted keys; YAML values)."),
        resume: Optional[Path] = typer.Option(None, "--resume", help="Continue from a last.pt checkpoint."),
        out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output folder (default: the config's "
                                                                       "`out`, runs/<name>)."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Train into an output folder that already "
                                                                  "holds a run (its files are replaced)."),
        fold: Optional[str] = typer.Option(None, "--fold", help="With data.folds: one fold index (written to "
                                                                "OUT/fold<K>), or 'all' (default) to train "
                                                                "every fold (OUT/fold<K> and OUT/cv.json)."),
        no_progress: bool = typer.Option(False, "--no-progress", help="No progress bars (epoch lines only)."),
        print_config: bool = typer.Option(False, "--print-config", help="Print the resolved config and exit."),
    ) -> None:
        """Train a model as CONFIG describes; writes best.pt, last.pt, metrics.csv,
        config.yaml and result.json to the output folder and prints a JSON summary on stdout.
        Multi-GPU: run the same command under torchrun:
        torchrun --nproc_per_node=N "$(command -v litefer)" train CONFIG."""
        from litefer.training.config import ConfigError, dump_config, load_config
        overrides = list(set_ or [])
        if no_progress:
            overrides.append("train.progress=false")
        try:
            cfg = load_config(config, overrides)
        except ConfigError as exc:
            raise fail(str(exc))
        if print_config:
            typer.echo(dump_config(cfg), nl=False)
            return
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
        if resume is not None and not resume.is_file():
            raise fail(f"--resume {resume}: no such file")

        from litefer.data.base import DatasetError
        from litefer.models.checkpoint import CheckpointError
        from litefer.training import trainer
        try:
            if all_folds:
                cv = trainer.train_folds(cfg, out_dir)
                console.print(f"{cfg.data.folds}-fold CV: test accuracy {cv.summary['test_acc_mean']:.4f} "
                              f"± {cv.summary['test_acc_std']:.4f}", highlight=False)
                echo_json({"out_dir": str(out_dir), **cv.summary})
                return
            res = trainer.train(cfg, out_dir, resume=resume)
        except (ConfigError, DatasetError, CheckpointError) as exc:
            raise fail(str(exc))
        except FloatingPointError as exc:
            raise fail(str(exc), code=1)
        except KeyboardInterrupt:
            console.print(f"[yellow]interrupted[/]; continue with --resume {out_dir / 'last.pt'}", highlight=False)
            raise typer.Exit(130)
        echo_json({
            "out_dir": str(res.out_dir),
            "best_checkpoint": str(res.best_checkpoint) if res.best_checkpoint else None,
            "last_checkpoint": str(res.last_checkpoint) if res.last_checkpoint else None,
            "best_epoch": res.best_epoch, "epochs_run": len(res.history), "stopped_early": res.stopped_early,
            "val_acc": res.best_metrics.get("acc"),
            "test_acc": res.test_metrics["acc"] if res.test_metrics else None,
        })
