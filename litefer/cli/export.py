"""``litefer export``: a checkpoint to ONNX (fp32 or int8), with its JSON sidecar."""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Optional

import typer

from litefer.cli._common import console, echo_json, fail


def register(app: typer.Typer) -> None:
    @app.command("export")
    def export_cmd(
        checkpoint: str = typer.Argument("default", help="Checkpoint path (.safetensors/.pt) or bundled model name."),
        fmt: str = typer.Option("onnx", "--format", help="Output format (only onnx)."),
        int8: bool = typer.Option(False, "--int8", help="Post-training static int8 quantisation (QDQ, "
                                                        "per-channel weights), calibrated on real training images."),
        opset: Optional[int] = typer.Option(None, min=13, help="ONNX opset (default 18 with the dynamo "
                                                                "exporter, 17 with torchscript)."),
        dynamic_batch: bool = typer.Option(True, "--dynamic-batch/--fixed-batch",
                                           help="Dynamic batch dimension (default), or a fixed batch of 1."),
        out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output .onnx path (default "
                                           "./<checkpoint>.onnx, or ./<checkpoint>.int8.onnx with --int8)."),
        force: bool = typer.Option(False, "--force", help="Overwrite an existing output and sidecar."),
        exporter: str = typer.Option("auto", help="auto (dynamo, falling back to torchscript), dynamo or torchscript."),
        no_fuse: bool = typer.Option(False, "--no-fuse", help="Do not fold BatchNorm/re-parameterise before export."),
        calib_dataset: str = typer.Option("fer2013", help="Dataset whose training split calibrates --int8."),
        calib_count: int = typer.Option(300, min=1, help="Number of calibration images for --int8."),
        calib_method: str = typer.Option("minmax", help="Calibration: minmax, percentile or entropy."),
        calib_root: Optional[Path] = typer.Option(None, help="Folder of the calibration dataset (default $LITEFER_DATA/<dataset>)."),
    ) -> None:
        """Export a model to ONNX: writes OUT and OUT.json (labels, input size, channels,
        mean/std, crop, arch, checkpoint sha256, litefer version), enough to run OUT alone
        with onnxruntime.  Prints a JSON summary on stdout."""
        if fmt.lower() != "onnx":
            raise fail(f"--format {fmt!r} is not supported; only onnx")
        try:
            from litefer.deploy.export import EXPORTERS, ExportError, export_onnx
            from litefer.deploy.onnx_backend import OnnxBackendError, resolve_checkpoint
        except ModuleNotFoundError as exc:
            from rich.markup import escape
            extra = "train,onnx" if (exc.name or "").split(".")[0] in ("torch", "torchvision") else "onnx"
            raise fail(escape(f"export needs PyTorch and the onnx package ({exc.name} missing): "
                              f"pip install 'litefer[{extra}]'"))
        from litefer.models.checkpoint import CheckpointError
        if exporter not in EXPORTERS:
            raise fail(f"--exporter must be one of {', '.join(EXPORTERS)}, not {exporter!r}")
        try:
            ckpt = resolve_checkpoint(checkpoint)
        except OnnxBackendError as exc:
            raise fail(str(exc))
        if out is None:
            out = Path.cwd() / f"{ckpt.stem}{'.int8' if int8 else ''}.onnx"
        if out.suffix.lower() != ".onnx":
            raise fail(f"--out {out}: the output must end in .onnx")
        for p in (out, Path(str(out) + ".json")):
            if p.exists() and not force:
                raise fail(f"{p} already exists; pass --force to overwrite it")
        if not out.parent.is_dir():
            raise fail(f"--out {out}: folder {out.parent} does not exist")

        work = Path(tempfile.mkdtemp(prefix="litefer-export-")) if int8 else None
        try:
            target = work / "model.onnx" if work else out
            console.print(f"exporting [bold]{ckpt}[/] to ONNX…", highlight=False)
            try:
                res = export_onnx(ckpt, target, opset=opset, dynamic_batch=dynamic_batch, fuse=not no_fuse,
                                  exporter=exporter, force=force)
            except (ExportError, CheckpointError, OnnxBackendError) as exc:
                raise fail(str(exc))
            for note in res.notes:
                console.print(f"[yellow]note:[/] {note}", highlight=False)
            summary = {"path": str(out), "sidecar": str(out) + ".json", "arch": res.meta.get("arch"),
                       "exporter": res.exporter, "opset": res.opset, "dynamic_batch": dynamic_batch,
                       "fused": res.meta["export"]["fused"], "max_abs_diff_vs_torch": res.max_abs_diff,
                       "int8": int8}
            if int8:
                from litefer.deploy.quantize import QuantizationError, quantize_onnx
                console.print(f"quantising to int8 (calibration: {calib_count} {calib_dataset} train images)…",
                              highlight=False)
                try:
                    quantize_onnx(res.path, out, calib_dataset=calib_dataset, calib_count=calib_count,
                                  calib_root=calib_root, method=calib_method, force=force)
                except QuantizationError as exc:
                    raise fail(str(exc))
                from litefer.deploy.onnx_backend import read_sidecar
                summary["quantization"] = read_sidecar(out)["quantization"]
        finally:
            if work is not None:
                shutil.rmtree(work, ignore_errors=True)
        summary["bytes"] = out.stat().st_size
        console.print(f"wrote [bold]{out}[/] and {out.name}.json", highlight=False)
        echo_json(summary)
