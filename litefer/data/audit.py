"""Dataset audit: duplicates, leakage across splits, blank images, class balance.

>>> from litefer.data import load_dataset
>>> from litefer.data.audit import audit
>>> splits = {s: load_dataset("fer2013", split=s) for s in ("train", "publictest", "privatetest")}
>>> report = audit(splits)
>>> report.write("runs/audit-fer2013")      # audit.md, audit.json, exclude.txt
>>> train = splits["train"].exclude(report.exclude_ids())

What it checks, on the decoded pixels:

* **exact duplicates** — images with identical pixels (sha1 of shape + bytes), within a
  split and across splits (a test image also in train is *leakage*).  Byte-identical
  files are always pixel-identical, so these include every duplicate file.
* **near duplicates** — pairs whose 64-bit difference hash (dHash of a 9x8 area-downscale)
  differs in at most ``near_bits`` bits *and* whose 16x16 thumbnails, each standardised
  to zero mean and unit variance, differ by at most ``near_diff`` on average (the second
  test removes dHash collisions of smooth images).  Candidate pairs come from splitting
  the hash into ``near_bits + 1`` chunks (two hashes within ``near_bits`` bits agree on at
  least one chunk), so no all-pairs comparison is needed.  Near-constant images are left
  out (their hashes are noise).  Groups are connected components of matching pairs;
  groups that are only exact copies are not repeated here.  Where the arrays carry subject
  ids (``groups``, e.g. CK+), near-identical pairs of the *same subject* (frames of one
  sequence) are expected: they are counted, not grouped or excluded.
* **near-constant images** — pixel standard deviation below ``blank_std`` (blank, or a
  flat fill): excluded.
* **likely non-faces** (flagged for review, not excluded unless ``exclude_suspects``):
  low contrast (std below ``low_std``), or one grey level covering at least
  ``dominant_frac`` of the image (flat backgrounds, drawings, text).
* **class balance** per split (counts, shares, largest/smallest ratio).

The exclusion list keeps one copy of every duplicate group, the one in the most
protected split (``protect``; default: private/test splits first, then public/val,
then the rest), and lists the other copies with the near-constant images.  Applied to
train/val (as the trainer's ``data.exclude`` does), it removes the training copies of
test images and repeated training images; test splits are never changed by it.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from litefer.data.base import FaceArrays

DEFAULTS = dict(near_bits=4, near_diff=0.25, blank_std=2.0, low_std=12.0, dominant_frac=0.5)


# ------------------------------------------------------------------------------ features
def _grey(img: np.ndarray) -> np.ndarray:
    if img.ndim == 3:
        return (img[..., 0] * 0.299 + img[..., 1] * 0.587 + img[..., 2] * 0.114).astype(np.float32)
    return img.astype(np.float32)


def pixel_hash(img: np.ndarray) -> str:
    h = hashlib.sha1(str(img.shape).encode())
    h.update(np.ascontiguousarray(img).tobytes())
    return h.hexdigest()


def dhash(img: np.ndarray) -> np.uint64:
    """64-bit difference hash: sign of horizontal gradients of a 9x8 area-downscale."""
    return _features(img[None])[0][0]


def _features(images: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(dhash uint64 (N,), standardised 16x16 thumbnails (N,256), std (N,), dominant share (N,))."""
    import cv2
    n = len(images)
    hashes = np.zeros(n, np.uint64)
    thumbs = np.zeros((n, 256), np.float32)
    stds = np.zeros(n, np.float32)
    dom = np.zeros(n, np.float32)
    weights = (np.uint64(1) << np.arange(63, -1, -1, dtype=np.uint64))
    for i in range(n):
        g = _grey(images[i])
        small = cv2.resize(g, (9, 8), interpolation=cv2.INTER_AREA)
        bits = (small[:, 1:] > small[:, :-1]).ravel().astype(np.uint64)
        hashes[i] = np.sum(bits * weights, dtype=np.uint64)
        t = cv2.resize(g, (16, 16), interpolation=cv2.INTER_AREA).ravel()
        s = t.std()
        thumbs[i] = (t - t.mean()) / (s if s > 1e-3 else 1.0)
        stds[i] = g.std()
        q = np.rint(g).astype(np.int64).ravel()
        dom[i] = np.bincount(q, minlength=256).max() / q.size
    return hashes, thumbs, stds, dom


def _popcount(x: np.ndarray) -> np.ndarray:
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(x).astype(np.int64)
    b = x.view(np.uint8).reshape(*x.shape, 8)
    return np.unpackbits(b, axis=-1).sum(-1).astype(np.int64)


def near_pairs(hashes: np.ndarray, thumbs: np.ndarray, near_bits: int, near_diff: float,
               eligible: Optional[np.ndarray] = None, max_bucket: int = 4000) -> np.ndarray:
    """(P, 2) index pairs i<j within ``near_bits`` dHash bits and ``near_diff`` thumbnail distance."""
    n = len(hashes)
    idx_all = np.arange(n) if eligible is None else np.flatnonzero(eligible)
    if len(idx_all) < 2:
        return np.zeros((0, 2), np.int64)
    h = hashes[idx_all]
    chunks = near_bits + 1
    edges = np.linspace(0, 64, chunks + 1).astype(int)
    cand = set()
    for c in range(chunks):
        lo, hi = edges[c], edges[c + 1]
        mask = np.uint64((1 << (hi - lo)) - 1)
        key = (h >> np.uint64(64 - hi)) & mask
        order = np.argsort(key, kind="stable")
        ks = key[order]
        starts = np.flatnonzero(np.r_[True, ks[1:] != ks[:-1]])
        ends = np.r_[starts[1:], len(ks)]
        for s, e in zip(starts, ends):
            if e - s < 2:
                continue
            members = order[s:e][:max_bucket]
            hm = h[members]
            d = _popcount(hm[:, None] ^ hm[None, :])
            a, b = np.nonzero(np.triu(d <= near_bits, 1))
            for i, j in zip(members[a], members[b]):
                cand.add((int(min(i, j)), int(max(i, j))))
    if not cand:
        return np.zeros((0, 2), np.int64)
    pairs = np.asarray(sorted(cand), dtype=np.int64)
    gi, gj = idx_all[pairs[:, 0]], idx_all[pairs[:, 1]]
    diff = np.abs(thumbs[gi] - thumbs[gj]).mean(1)
    ok = diff <= near_diff
    return np.stack([gi[ok], gj[ok]], 1)


def _components(n: int, pairs: np.ndarray) -> list[list[int]]:
    parent = np.arange(n)

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in pairs:
        ra, rb = find(int(a)), find(int(b))
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    comps: dict[int, list[int]] = {}
    for i in np.unique(pairs.ravel()) if len(pairs) else []:
        comps.setdefault(find(int(i)), []).append(int(i))
    return [sorted(v) for v in comps.values() if len(v) > 1]


# ------------------------------------------------------------------------------ report
def _protect_rank(split: str) -> int:
    s = split.lower()
    if "private" in s or s in ("test", "testing"):
        return 0
    if "public" in s or s in ("val", "valid", "validation"):
        return 1
    return 2


@dataclass
class AuditReport:
    """Findings of :func:`audit`; ``write(out_dir)`` saves audit.md, audit.json and exclude.txt."""
    dataset: str
    params: dict
    splits: dict[str, dict]
    exact_groups: list[list[dict]]
    near_groups: list[list[dict]]
    flagged: dict[str, list[dict]]
    exclusions: dict[str, str]
    summary: dict = field(default_factory=dict)

    def exclude_ids(self) -> set[str]:
        return set(self.exclusions)

    def to_dict(self) -> dict:
        return {"dataset": self.dataset, "params": self.params, "summary": self.summary, "splits": self.splits,
                "exact_groups": self.exact_groups, "near_groups": self.near_groups, "flagged": self.flagged,
                "exclusions": [{"id": k, "reason": v} for k, v in self.exclusions.items()]}

    def to_markdown(self, max_rows: int = 25) -> str:
        s = self.summary
        out = [f"# Data audit: {self.dataset or 'dataset'}", ""]
        out.append("| split | images | classes |")
        out.append("| --- | ---: | --- |")
        for name, info in self.splits.items():
            cc = ", ".join(f"{k} {v}" for k, v in info["class_counts"].items())
            out.append(f"| {name} | {info['n']} | {cc} |")
        out += ["", "## Summary", ""]
        for k, v in s.items():
            if isinstance(v, dict):
                v = ", ".join(f"{a}: {b}" for a, b in v.items()) if v else "none"
            out.append(f"- {k.replace('_', ' ')}: {v}")
        out += ["", "## Class balance", ""]
        for name, info in self.splits.items():
            shares = ", ".join(f"{k} {100 * v:.1f}%" for k, v in info["class_share"].items())
            out.append(f"- **{name}** (largest/smallest class {info['imbalance_ratio']}): {shares}")

        def groups_md(title: str, groups: list[list[dict]]) -> None:
            out.extend(["", f"## {title} ({len(groups)} groups)", ""])
            if not groups:
                out.append("none")
                return
            out.append("| # | images (split: id [label]) |")
            out.append("| ---: | --- |")
            for i, g in enumerate(groups[:max_rows]):
                cell = "; ".join(f"{m['split']}: {m['id']} [{m['label']}]" for m in g)
                out.append(f"| {i + 1} | {cell} |")
            if len(groups) > max_rows:
                out.append(f"| … | {len(groups) - max_rows} more groups in audit.json |")

        groups_md("Exact duplicates (identical pixels)", self.exact_groups)
        groups_md("Near duplicates (not pixel-identical)", self.near_groups)
        for kind, items in self.flagged.items():
            out.extend(["", f"## {kind} ({len(items)})", ""])
            for m in items[:max_rows]:
                out.append(f"- {m['split']}: {m['id']} [{m['label']}] {m['detail']}")
            if len(items) > max_rows:
                out.append(f"- … {len(items) - max_rows} more in audit.json")
        reasons: dict[str, int] = {}
        for r in self.exclusions.values():
            k = r.split(" of ")[0]
            reasons[k] = reasons.get(k, 0) + 1
        out.extend(["", f"## Exclusion list ({len(self.exclusions)} ids, exclude.txt)", ""])
        for k, v in sorted(reasons.items()):
            out.append(f"- {k}: {v}")
        out += ["", "Parameters: " + ", ".join(f"{k}={v}" for k, v in self.params.items()), ""]
        return "\n".join(out)

    def write(self, out_dir) -> dict[str, Path]:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = {"markdown": out / "audit.md", "json": out / "audit.json", "exclude": out / "exclude.txt"}
        paths["markdown"].write_text(self.to_markdown(), encoding="utf-8")
        paths["json"].write_text(json.dumps(self.to_dict(), indent=1), encoding="utf-8")
        lines = [f"# litefer data audit of {self.dataset or 'dataset'}: {len(self.exclusions)} ids to exclude",
                 "# (reasons in audit.json; apply with FaceArrays.exclude(read_exclusion_list(path)))"]
        paths["exclude"].write_text("\n".join(lines + list(self.exclusions)) + "\n", encoding="utf-8")
        return paths


def read_exclusion_list(path) -> set[str]:
    """Ids in an exclusion list (one per line; ``#`` comments and blank lines ignored)."""
    ids = set()
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            ids.add(line)
    return ids


def audit(arrays_by_split: dict[str, FaceArrays], dataset: str = "", near: bool = True,
          protect: Optional[Sequence[str]] = None, exclude_near: bool = True, exclude_suspects: bool = False,
          **params) -> AuditReport:
    """Audit the splits of one dataset (see the module docstring for checks and parameters:
    ``near_bits``, ``near_diff``, ``blank_std``, ``low_std``, ``dominant_frac``)."""
    bad = set(params) - set(DEFAULTS)
    if bad:
        raise TypeError(f"unknown audit parameter(s) {sorted(bad)}; known: {sorted(DEFAULTS)}")
    p = {**DEFAULTS, **params}
    names = list(arrays_by_split)
    if not dataset:
        dataset = next((a.name for a in arrays_by_split.values() if a.name), "")
    order = list(protect) if protect is not None else sorted(names, key=lambda s: (_protect_rank(s), names.index(s)))
    rank = {s: order.index(s) if s in order else len(order) for s in names}

    # flatten every split into one index space
    split_of, id_of, label_of, group_of = [], [], [], []
    splits_info = {}
    for s, a in arrays_by_split.items():
        counts = a.class_counts()
        nz = [c for c in counts.values() if c > 0]
        splits_info[s] = {"n": len(a), "class_counts": counts,
                          "class_share": {k: (v / len(a) if len(a) else 0.0) for k, v in counts.items()},
                          "imbalance_ratio": round(max(nz) / min(nz), 2) if nz else None}
        hard = a.hard_targets
        for i in range(len(a)):
            split_of.append(s)
            id_of.append(a.ids[i])
            label_of.append(a.labels[int(hard[i])])
            group_of.append(None if a.groups is None else f"{s}:{a.groups[i]}")
    n = len(id_of)

    def member(i: int) -> dict:
        return {"split": split_of[i], "id": id_of[i], "label": label_of[i]}

    # exact duplicates
    by_hash: dict[str, list[int]] = {}
    k = 0
    for a in arrays_by_split.values():
        for img in a.images:
            by_hash.setdefault(pixel_hash(img), []).append(k)
            k += 1
    exact = [g for g in by_hash.values() if len(g) > 1]
    exact.sort(key=lambda g: (-len(g), id_of[g[0]]))
    hash_group = np.arange(n)
    for gi, g in enumerate(exact):
        hash_group[g] = n + gi

    # features for near duplicates and flags
    stds = np.zeros(n, np.float32)
    dom = np.zeros(n, np.float32)
    hashes = np.zeros(n, np.uint64)
    thumbs = np.zeros((n, 256), np.float32)
    k = 0
    for a in arrays_by_split.values():
        if len(a):
            h, t, sd, dm = _features(a.images)
            hashes[k:k + len(a)], thumbs[k:k + len(a)], stds[k:k + len(a)], dom[k:k + len(a)] = h, t, sd, dm
        k += len(a)
    blank = stds < p["blank_std"]
    near_groups: list[list[int]] = []
    n_same_subject = 0
    if near:
        pairs = near_pairs(hashes, thumbs, int(p["near_bits"]), float(p["near_diff"]), eligible=~blank)
        pairs = pairs[hash_group[pairs[:, 0]] != hash_group[pairs[:, 1]]] if len(pairs) else pairs
        same_subject = np.array([group_of[a] is not None and group_of[a] == group_of[b] for a, b in pairs], bool)
        n_same_subject = int(same_subject.sum())
        pairs = pairs[~same_subject] if len(pairs) else pairs
        near_groups = _components(n, pairs)
        near_groups.sort(key=lambda g: (-len(g), id_of[g[0]]))

    flagged = {
        "Near-constant images (excluded)": [dict(member(i), detail=f"std {stds[i]:.2f}")
                                            for i in np.flatnonzero(blank)],
        "Likely non-faces: low contrast (review)": [dict(member(i), detail=f"std {stds[i]:.1f}") for i in
                                                    np.flatnonzero(~blank & (stds < p["low_std"]))],
        "Likely non-faces: one grey level dominates (review)": [
            dict(member(i), detail=f"{100 * dom[i]:.0f}% of pixels share one value")
            for i in np.flatnonzero(~blank & (dom >= p["dominant_frac"]))],
    }

    exclusions: dict[str, str] = {}

    def keep_one(group: list[int], kind: str) -> None:
        keeper = min(group, key=lambda i: (rank[split_of[i]], i))
        for i in group:
            if i != keeper and id_of[i] not in exclusions:
                exclusions[id_of[i]] = f"{kind} of {split_of[keeper]}:{id_of[keeper]}"

    for g in exact:
        keep_one(g, "exact duplicate")
    if exclude_near:
        for g in near_groups:
            keep_one(g, "near duplicate")
    for i in np.flatnonzero(blank):
        exclusions.setdefault(id_of[i], f"near-constant of std {stds[i]:.2f}")
    if exclude_suspects:
        for kind, items in flagged.items():
            for m in items:
                exclusions.setdefault(m["id"], f"suspect ({kind})")

    def cross(groups: list[list[int]]) -> dict:
        """Images of each split that also occur (as a copy) in another split."""
        out: dict[str, int] = {}
        for g in groups:
            sp = {split_of[i] for i in g}
            if len(sp) > 1:
                for i in g:
                    others = sp - {split_of[i]}
                    if others:
                        out[split_of[i]] = out.get(split_of[i], 0) + 1
        return out

    def leak(groups: list[list[int]]) -> dict:
        """Images of each protected split that have a copy in a less protected split."""
        out: dict[str, int] = {}
        for g in groups:
            for i in g:
                if any(rank[split_of[j]] > rank[split_of[i]] for j in g):
                    out[split_of[i]] = out.get(split_of[i], 0) + 1
        return out

    def overlap(groups: list[list[int]]) -> dict:
        """"A in B": how many images of split A have a copy in split B."""
        out: dict[str, int] = {}
        for g in groups:
            for i in g:
                for t in sorted({split_of[j] for j in g} - {split_of[i]}):
                    key = f"{split_of[i]} in {t}"
                    out[key] = out.get(key, 0) + 1
        return dict(sorted(out.items()))

    def shared(groups: list[list[int]]) -> dict:
        """"A & B": how many groups (distinct images) have copies in both A and B; and
        "<least protected> & others": groups with copies in it and in any other split."""
        out: dict[str, int] = {}
        last = order[-1] if order else None
        for g in groups:
            sp = sorted({split_of[i] for i in g}, key=lambda x: rank[x])
            for a in range(len(sp)):
                for b in range(a + 1, len(sp)):
                    key = f"{sp[b]} & {sp[a]}"
                    out[key] = out.get(key, 0) + 1
            if last in sp and len(sp) > 1 and len(names) > 2:
                key = f"{last} & others"
                out[key] = out.get(key, 0) + 1
        return dict(sorted(out.items()))

    conflicts = sum(1 for g in exact if len({label_of[i] for i in g}) > 1)
    summary = {
        "images": n,
        "exact_duplicate_groups": len(exact),
        "images_in_exact_groups": int(sum(len(g) for g in exact)),
        "exact_groups_with_conflicting_labels": conflicts,
        "exact_groups_across_splits": sum(1 for g in exact if len({split_of[i] for i in g}) > 1),
        "images_with_exact_copy_in_other_split": cross(exact),
        "exact_copies_between_splits": overlap(exact),
        "exact_groups_shared_between_splits": shared(exact),
        "protected_images_with_exact_copy_in_less_protected_split": leak(exact),
        "near_duplicate_groups": len(near_groups),
        "near_pairs_within_one_subject_not_grouped": n_same_subject,
        "images_in_near_groups": int(sum(len(g) for g in near_groups)),
        "near_groups_across_splits": sum(1 for g in near_groups if len({split_of[i] for i in g}) > 1),
        "near_copies_between_splits": overlap(near_groups),
        "near_groups_shared_between_splits": shared(near_groups),
        "near_constant_images": int(blank.sum()),
        "low_contrast_images": len(flagged["Likely non-faces: low contrast (review)"]),
        "dominant_value_images": len(flagged["Likely non-faces: one grey level dominates (review)"]),
        "excluded_ids": len(exclusions),
        "protection_order": " > ".join(order),
    }
    return AuditReport(
        dataset=dataset, params=p, splits=splits_info,
        exact_groups=[[member(i) for i in g] for g in exact],
        near_groups=[[member(i) for i in g] for g in near_groups],
        flagged=flagged, exclusions=exclusions, summary=summary)
