"""Helpers shared by the CLI command modules."""
from __future__ import annotations

import sys

import typer
from rich.console import Console

console = Console(stderr=True)


def fail(message: str, code: int = 2) -> "typer.Exit":
    """Print a clear error to stderr and return the Exit to raise."""
    console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def echo_json(obj) -> None:
    import json
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()
