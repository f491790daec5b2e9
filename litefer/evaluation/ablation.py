"""Ablation studies: train named config variants and compare them in one table.

A spec is a YAML file::

    name: loss-ablation                 # optional (default: the file's stem)
    base: ../configs/default_ferplus.yaml   # relative to this file (or the working directory)
    out: runs/ablations/{name}          # optional (default runs/ablations/{name})
    set: [train.epochs=40]              # optional: overrides for every variant
    folds: 0                            # optional: >= 2 cross-validates every variant
    variants:                           # in table order; the first is the reference
      baseline: {}
      center_loss: [loss.center.weight=0.01]          # a list of key=value strings
      cosine_harmony: {loss.cosine_harmony.weight: 0.1}  # or a mapping of dotted keys
      no_flip: {aug: {hflip: 0.0}}                    # nested mappings work too

Every variant is the base config + ``set`` + its own overrides (validated before anything
trains, so a typo in the last variant fails at once).  Each runs in ``out/<variant>/``
with :func:`litefer.training.train` (or :func:`litefer.evaluation.cv.cross_validate`
when ``folds`` >= 2) and the comparison is written to ``out/ablation.md``,
``out/ablation.csv`` and ``out/ablation.json``, rewritten after every variant.

A finished variant leaves ``out/<variant>/ablation_row.json`` (its config and its
table row); running the spec again reuses rows whose config is unchanged, so an
interrupted ablation continues where it stopped (``reuse=False`` retrains all).
"""
from __future__ import annotations

import copy
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import yaml

from litefer.evaluation.metrics import format_mean_std
from litefer.evaluation.report import markdown_table, pct, write_csv, write_json

SPEC_KEYS = ("name", "base", "out", "set", "folds", "variants", "notes")


class AblationError(ValueError):
    """A bad ablation spec: the message names the file and the key."""


@dataclass
class AblationSpec:
    name: str
    base: Path
    variants: dict[str, list[str]]
    common: list[str] = field(default_factory=list)
    out: Optional[str] = None
    folds: int = 0
    notes: str = ""
    source: Optional[Path] = None

    def out_dir(self) -> Path:
        return Path((self.out or "runs/ablations/{name}").replace("{name}", self.name))


def _flatten(d: Any, prefix: str = "") -> list[str]:
    """{a: {b: 1}} -> ["a.b=1"] (values written back as YAML flow scalars)."""
    out = []
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v and not key.endswith(("kwargs", "options")):
            out += _flatten(v, f"{key}.")
        else:
            out.append(f"{key}={yaml.safe_dump(v, default_flow_style=True).strip().removesuffix('...').strip()}")
    return out


def _overrides(value: Any, where: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        if not all(isinstance(v, str) and "=" in v for v in value):
            raise AblationError(f"{where}: expected key=value strings, got {value!r}")
        return list(value)
    if isinstance(value, dict):
        return _flatten(value)
    raise AblationError(f"{where}: expected a list of key=value strings or a mapping, got {type(value).__name__}")


def load_spec(path: str | Path) -> AblationSpec:
    """Read and check an ablation spec (see the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise AblationError(f"{path}: no such ablation spec")
    try:
        d = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise AblationError(f"{path}: invalid YAML ({exc})") from None
    if not isinstance(d, dict):
        raise AblationError(f"{path}: the top level must be a mapping with 'base' and 'variants'")
    unknown = [k for k in d if k not in SPEC_KEYS]
    if unknown:
        raise AblationError(f"{path}: unknown key(s) {unknown}; known: {', '.join(SPEC_KEYS)}")
    if not d.get("base"):
        raise AblationError(f"{path}: 'base' (the base config file) is required")
    base = Path(str(d["base"]))
    if not base.is_absolute() and (path.parent / base).is_file():
        base = path.parent / base                          # relative to the spec (else to the cwd)
    if not base.is_file():
        raise AblationError(f"{path}: base config {d['base']!r} not found (relative to {path.parent} or the "
                            f"working directory)")
    variants_raw = d.get("variants")
    if not isinstance(variants_raw, dict) or not variants_raw:
        raise AblationError(f"{path}: 'variants' must map variant names to override sets")
    variants = {}
    for name, ov in variants_raw.items():
        name = str(name)
        if not name or any(ch in name for ch in "/\\") or name.startswith("."):
            raise AblationError(f"{path}: variant name {name!r} is not a usable folder name")
        variants[name] = _overrides(ov, f"{path}: variants.{name}")
    try:
        folds = int(d.get("folds") or 0)
    except (TypeError, ValueError):
        raise AblationError(f"{path}: 'folds' must be an integer") from None
    if folds == 1 or folds < 0:
        raise AblationError(f"{path}: 'folds' must be 0 (no cross-validation) or >= 2")
    return AblationSpec(name=str(d.get("name") or path.stem), base=base, variants=variants,
                        common=_overrides(d.get("set"), f"{path}: set"), out=d.get("out"), folds=folds,
                        notes=str(d.get("notes") or ""), source=path)


def variant_configs(spec: AblationSpec, extra: Sequence[str] = ()) -> dict[str, Any]:
    """name -> validated TrainConfig (base + common + extra + the variant's overrides)."""
    from litefer.training.config import ConfigError, load_config
    cfgs = {}
    for name, ov in spec.variants.items():
        try:
            cfg = load_config(spec.base, [*spec.common, *extra, *ov])
        except ConfigError as exc:
            raise AblationError(f"variant {name!r}: {exc}") from None
        cfg.name = f"{spec.name}-{name}"
        cfgs[name] = cfg
    return cfgs


@dataclass
class AblationResult:
    spec: AblationSpec
    rows: list[dict]
    out_dir: Path
    files: dict = field(default_factory=dict)


TABLE = [  # (key, header, kind)
    ("variant", "variant", "s"), ("overrides", "overrides", "s"), ("params_m", "params (M)", "f3"),
    ("epochs", "epochs", "s"), ("best_epoch", "best epoch", "s"), ("val_acc", "val acc %", "p"),
    ("test_acc", "test acc %", "p"), ("test_mean_class_acc", "test mean class acc %", "p"),
    ("test_macro_f1", "test macro F1 %", "p"), ("delta_test_acc", "Δ test acc (pp)", "d"),
    ("minutes", "minutes", "f1"),
]


def _fmt(v: Any, kind: str) -> str:
    if v is None:
        return "—"
    if isinstance(v, str):
        return v
    if kind == "p":
        return pct(v)
    if kind == "d":
        return f"{100 * v:+.2f}"
    if kind.startswith("f"):
        return f"{v:.{int(kind[1:])}f}"
    return str(v)


def _row_from_train(name: str, ov: list[str], res, seconds: float) -> dict:
    model = getattr(res, "model", None)
    params = sum(p.numel() for p in model.parameters()) / 1e6 if model is not None else None
    test = res.test_metrics or {}
    return {"variant": name, "overrides": " ".join(ov) or "(base)", "params_m": params,
            "epochs": len(res.history), "best_epoch": res.best_epoch, "val_acc": (res.best_metrics or {}).get("accuracy"),
            "test_acc": test.get("accuracy"), "test_mean_class_acc": test.get("mean_class_acc"),
            "test_macro_f1": test.get("macro_f1"), "minutes": seconds / 60.0,
            "out_dir": str(res.out_dir), "best_checkpoint": str(res.best_checkpoint) if res.best_checkpoint else None}


def _row_from_cv(name: str, ov: list[str], rep, seconds: float) -> dict:
    s = rep.summary
    first = rep.folds[0].train_result if rep.folds else None
    model = getattr(first, "model", None)
    return {"variant": name, "overrides": " ".join(ov) or "(base)",
            "params_m": sum(p.numel() for p in model.parameters()) / 1e6 if model is not None else None,
            "epochs": sum(len(f.train_result.history) for f in rep.folds if f.train_result is not None),
            "best_epoch": None, "val_acc": s["val_acc"]["mean"], "test_acc": s["accuracy"]["mean"],
            "test_mean_class_acc": s["mean_class_acc"]["mean"], "test_macro_f1": s["macro_f1"]["mean"],
            "test_acc_std": s["accuracy"]["std"], "test_mean_class_acc_std": s["mean_class_acc"]["std"],
            "test_macro_f1_std": s["macro_f1"]["std"],
            "test_acc_pm": format_mean_std(s["accuracy"]["values"]),
            "test_mean_class_acc_pm": format_mean_std(s["mean_class_acc"]["values"]),
            "test_macro_f1_pm": format_mean_std(s["macro_f1"]["values"]),
            "minutes": seconds / 60.0, "out_dir": str(rep.out_dir), "best_checkpoint": None}


def _with_deltas(rows: list[dict]) -> list[dict]:
    ref = rows[0].get("test_acc") if rows else None
    for r in rows:
        r["delta_test_acc"] = (r["test_acc"] - ref) if (ref is not None and r.get("test_acc") is not None) else None
    return rows


def ablation_markdown(spec: AblationSpec, rows: list[dict], pending: Sequence[str] = ()) -> str:
    cv = spec.folds >= 2
    lines = [f"# Ablation: {spec.name}\n",
             f"- **base config**: `{spec.base}`" + (f" with `{' '.join(spec.common)}`" if spec.common else ""),
             "- **protocol**: " + (f"{spec.folds}-fold cross-validation per variant; test metrics are mean ± std "
                                     f"over folds" if cv else "one training run per variant; test metrics on the "
                                     "config's test split with the epoch selected on its validation split"),
             "- Δ test acc: percentage points against the first variant"]
    if spec.notes:
        lines.append(f"- {spec.notes}")
    if pending:
        lines.append(f"- **not run yet**: {', '.join(pending)}")
    lines.append("")
    rendered = []
    for r in rows:
        cells = []
        for key, _, kind in TABLE:
            if cv and key in ("test_acc", "test_mean_class_acc", "test_macro_f1") and r.get(f"{key}_pm"):
                cells.append(r[f"{key}_pm"])
            else:
                cells.append(_fmt(r.get(key), kind))
        rendered.append(cells)
    lines.append(markdown_table([h for _, h, _ in TABLE], rendered, align=["l", "l"] + ["r"] * (len(TABLE) - 2)))
    return "\n".join(lines)


CSV_KEYS = ("variant", "overrides", "params_m", "epochs", "best_epoch", "val_acc", "test_acc",
            "test_mean_class_acc", "test_macro_f1", "test_acc_std", "test_mean_class_acc_std",
            "test_macro_f1_std", "delta_test_acc", "minutes", "out_dir", "best_checkpoint")


def write_ablation(spec: AblationSpec, rows: list[dict], out_dir: Path, pending: Sequence[str] = ()) -> dict:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "ablation.md").write_text(ablation_markdown(spec, rows, pending), encoding="utf-8")
    files = {"ablation.md": out / "ablation.md",
             "ablation.csv": write_csv(out / "ablation.csv", CSV_KEYS, [[r.get(k) for k in CSV_KEYS] for r in rows]),
             "ablation.json": write_json(out / "ablation.json", {
                 "name": spec.name, "base": str(spec.base), "set": spec.common, "folds": spec.folds,
                 "variants": spec.variants, "rows": rows, "pending": list(pending)})}
    return files


def run_ablation(spec: AblationSpec | str | Path, out_dir: str | Path | None = None, *,
                 only: Optional[Sequence[str]] = None, overrides: Sequence[str] = (), reuse: bool = True,
                 max_epochs: Optional[int] = None, quiet: bool = False,
                 log: Optional[Callable[[str], None]] = None,
                 train_fn: Optional[Callable] = None) -> AblationResult:
    """Train every variant (or those in ``only``) and write the comparison table."""
    from litefer.evaluation.cv import cross_validate
    from litefer.training import train as _train
    from litefer.training.config import dump_config

    spec = load_spec(spec) if not isinstance(spec, AblationSpec) else spec
    train_fn = train_fn or _train
    say = log or (lambda msg: None)
    cfgs = variant_configs(spec, overrides)                 # validate every variant first
    names = list(spec.variants)
    if only:
        missing = [n for n in only if n not in spec.variants]
        if missing:
            raise AblationError(f"no variant(s) {missing} in {spec.source or spec.name}; variants: {', '.join(names)}")
        names = [n for n in names if n in set(only)]
    out = Path(out_dir) if out_dir is not None else spec.out_dir()
    out.mkdir(parents=True, exist_ok=True)
    rows: dict[str, dict] = {}
    for name in spec.variants:                              # earlier runs of variants not selected now
        prev = _previous_row(out / name, dump_config(cfgs[name]), spec.folds, max_epochs) if reuse else None
        if prev is not None:
            rows[name] = prev
    for i, name in enumerate(names):
        cfg = copy.deepcopy(cfgs[name])
        vdir = out / name
        if name in rows:
            say(f"[{i + 1}/{len(names)}] {name}: reusing the finished run in {vdir}")
            continue
        ov = [*overrides, *spec.variants[name]]
        say(f"[{i + 1}/{len(names)}] {name}: {' '.join(ov) or '(base config)'}")
        t0 = time.perf_counter()
        if spec.folds >= 2:
            rep = cross_validate(cfg, spec.folds, vdir, max_epochs=max_epochs, quiet=quiet, log=say,
                                 train_fn=train_fn)
            row = _row_from_cv(name, ov, rep, time.perf_counter() - t0)
        else:
            res = train_fn(cfg, vdir, max_epochs=max_epochs, quiet=quiet)
            row = _row_from_train(name, ov, res, time.perf_counter() - t0)
        rows[name] = row
        write_json(vdir / "ablation_row.json", {"config": dump_config(cfg), "folds": spec.folds,
                                                "max_epochs": max_epochs, "row": row})
        ordered = _with_deltas([rows[n] for n in spec.variants if n in rows])
        write_ablation(spec, ordered, out, pending=[n for n in spec.variants if n not in rows])
    ordered = _with_deltas([rows[n] for n in spec.variants if n in rows])
    files = write_ablation(spec, ordered, out, pending=[n for n in spec.variants if n not in rows])
    return AblationResult(spec, ordered, out, files)


def _previous_row(vdir: Path, config_text: str, folds: int, max_epochs: Optional[int]) -> Optional[dict]:
    """The table row of a finished run of the same variant config, or None."""
    f = vdir / "ablation_row.json"
    if not f.is_file():
        return None
    try:
        d = json.loads(f.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if d.get("folds") != folds or d.get("max_epochs") != max_epochs:
        return None
    if d.get("config") != config_text and _normalised(d.get("config")) != config_text:
        return None
    return d.get("row")


def _normalised(config_text: Any) -> Optional[str]:
    """An older run's config as today's loader reads it: fields added to the config since
    take their defaults, so a run is still reused when nothing it set has changed (a field
    whose default changed differs, because the old run wrote its value out)."""
    from litefer.training.config import ConfigError, config_from_dict, dump_config
    if not isinstance(config_text, str):
        return None
    try:
        return dump_config(config_from_dict(yaml.safe_load(config_text)))
    except (ConfigError, yaml.YAMLError, TypeError, ValueError):
        return None
