"""``litefer models`` (the model zoo as a table: sizes and compute are counted, not typed) and
``litefer combine`` (trained checkpoints averaged into one ensemble checkpoint)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from litefer.cli._common import echo_json, fail


def zoo_rows(names: list[str] | None = None, flops: bool = True) -> list[dict]:
    """One dict per registered model: name, paper, input, params, macs (counted)."""
    import torch

    from litefer.deploy.profile import count_macs, count_params
    from litefer.models import create_model, list_models, model_info

    rows = []
    for name in names or list_models():
        info = model_info(name)          # KeyError with suggestions for unknown names
        with torch.random.fork_rng():
            model = create_model(name)
        c, s = info.default_input
        rows.append({
            "name": name, "paper": info.paper, "input": f"{c}x{s}x{s}",
            "params_m": count_params(model) / 1e6,
            "gmacs": count_macs(model, info.default_input) / 1e9 if flops else None,
            "paper_params_m": info.paper_params, "paper_defines_arch": info.paper_defines_arch,
            "paper_flops": info.paper_flops,
        })
    return rows


def paper_figures(row: dict) -> str:
    """The paper's own size / compute figures for a zoo row, e.g. "2.68 M, 397.35 M FLOPs"."""
    parts = []
    if row.get("paper_params_m") is not None:
        parts.append(f"{row['paper_params_m']:g} M" + ("" if row.get("paper_defines_arch", True) else "*"))
    if row.get("paper_flops"):
        parts.append(str(row["paper_flops"]))
    return ", ".join(parts) or "-"


def register(app: typer.Typer) -> None:
    @app.command("models")
    def models_cmd(
        name: Optional[list[str]] = typer.Argument(None, help="Only these models (default: all)."),
        no_flops: bool = typer.Option(False, "--no-flops", help="Skip counting MACs (faster)."),
        json_out: bool = typer.Option(False, "--json", help="Print JSON lines instead of a table."),
    ) -> None:
        """List the registered models: paper, input, parameters and MACs (counted)."""
        try:
            rows = zoo_rows(name or None, flops=not no_flops)
        except KeyError as exc:
            raise fail(str(exc.args[0]))
        if json_out:
            for r in rows:
                echo_json(r)
            return
        from rich.console import Console
        from rich.table import Table

        table = Table(title="litefer models", caption="params, GMACs: counted here (multiply-accumulates per "
                      "forward pass at the default input; FLOPs = 2 x MACs). paper reports: the paper's own "
                      "figures in its own units; * = the paper's text does not fix the size. "
                      "--json: full references.")
        for col, kw in (("name", {"style": "bold", "no_wrap": True}), ("input", {"no_wrap": True}),
                        ("params (M)", {"justify": "right", "no_wrap": True}),
                        ("GMACs", {"justify": "right", "no_wrap": True}),
                        ("paper reports", {})):
            table.add_column(col, **kw)
        for r in rows:
            table.add_row(r["name"], r["input"], f"{r['params_m']:.3f}",
                          "-" if r["gmacs"] is None else f"{r['gmacs']:.3f}", paper_figures(r))
        Console().print(table)

    @app.command("combine")
    def combine_cmd(
        checkpoints: list[str] = typer.Argument(..., help="Trained checkpoints (.safetensors/.pt) or bundled "
                                                          "model names, sharing labels and preprocessing."),
        out: Path = typer.Option(..., "--out", "-o", help="Output .safetensors file."),
        flip: bool = typer.Option(False, "--flip", help="Also average each member's answer for the mirrored "
                                                        "face (test-time augmentation inside the model)."),
        weights: bool = typer.Option(False, "--weights", help="Average the weights instead, into one network "
                                                              "of the same architecture and cost (checkpoints "
                                                              "of one training run, e.g. its best and last)."),
        force: bool = typer.Option(False, "--force", help="Overwrite an existing OUT."),
    ) -> None:
        """Average trained models into one: an `ensemble` checkpoint whose softmax is the mean of
        the members' (and, with --flip, of their mirrored answers), or with --weights one network
        whose weights are their mean.  `evaluate`, `predict`, `export` and `Recognizer` take it
        like any other checkpoint."""
        if weights and flip:
            raise fail("--weights and --flip: a weight average is one plain network; combine it with "
                       "--flip afterwards to add the mirrored answers")
        if out.suffix != ".safetensors":
            raise fail(f"--out {out}: the output must end in .safetensors")
        if out.exists() and not force:
            raise fail(f"{out} already exists; pass --force to overwrite it")
        if not out.parent.is_dir():
            raise fail(f"--out {out}: folder {out.parent} does not exist")
        from litefer.deploy.profile import count_params
        from litefer.models.checkpoint import save_safetensors
        from litefer.models.ensemble import average_weights, combine_checkpoints
        try:
            model, meta = average_weights(checkpoints) if weights else combine_checkpoints(checkpoints, flip=flip)
        except ValueError as exc:          # CheckpointError is one too
            raise fail(str(exc))
        save_safetensors(out, meta, model.state_dict())
        echo_json({"path": str(out), "members": len(checkpoints), "flip": flip, "weights": weights,
                   "arch": meta.arch, "params_m": count_params(model) / 1e6, "labels": meta.labels})
