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


def parse_opts(opts) -> dict:
    """``--opt key=value`` options as a dict (values parsed as YAML: numbers, booleans...)."""
    import yaml
    out: dict = {}
    for text in opts or []:
        if "=" not in text:
            raise fail(f"--opt {text!r}: expected key=value")
        k, v = text.split("=", 1)
        try:
            out[k.strip()] = yaml.safe_load(v) if v.strip() else ""
        except yaml.YAMLError:
            out[k.strip()] = v
    return out
