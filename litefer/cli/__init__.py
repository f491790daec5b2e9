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


def main() -> None:
    app()
