"""The ``litefer`` command line: a thin layer over the library API.

Each command lives in its own module of this package and exposes
``register(app: typer.Typer) -> None``; this file only assembles them.
"""
from __future__ import annotations

import importlib

import typer

app = typer.Typer(
    name="litefer",
    help="Lightweight facial expression recognition.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # docstrings are wrapped in the source: markdown re-flows them (and renders `code`)
    rich_markup_mode="markdown",
)

#: command modules, in help order
COMMAND_MODULES = ("predict", "models", "train", "evaluate", "data", "export", "serve", "moodplayer")

for _name in COMMAND_MODULES:
    try:
        _mod = importlib.import_module(f"litefer.cli.{_name}")
    except ModuleNotFoundError as exc:  # a module not written yet
        if exc.name != f"litefer.cli.{_name}":
            raise
        continue
    _mod.register(app)


#: packages of the extras, and the extra that installs each (the base install is inference only)
EXTRA_OF = {"torch": "train", "torchvision": "train", "matplotlib": "train", "onnx": "onnx",
            "onnxscript": "onnx", "fastapi": "serve", "uvicorn": "serve", "multipart": "serve"}


def main() -> None:
    try:
        app()
    except ModuleNotFoundError as exc:  # a command of an extra that is not installed
        top = (exc.name or "").split(".")[0]
        if top not in EXTRA_OF:
            raise
        from rich.markup import escape

        from litefer.cli._common import console
        console.print("[bold red]error:[/] " + escape(f"this command needs {top}, which the inference-only "
                      f"install leaves out: pip install 'litefer[{EXTRA_OF[top]}]'"), highlight=False, soft_wrap=True)
        raise SystemExit(2) from None
