"""Evaluation metrics exactly as the reference computes them (seed-rules.md, "Metrics"), at any taxonomy
depth: the reference's L1-L3 macro figures at depth 3, one per level otherwise.

Paths are " > "-joined strings; a missing prediction is None or "". Plain Python, no Dagster.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from taxo_pipeline.dataset.taxonomy import MAX_LEVEL, SEPARATOR, Depth, split_path


@dataclass(frozen=True)
class PRF:
    precision: float
    recall: float
    f1: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def _f1(p: float, r: float) -> float:
    return 2 * p * r / (p + r) if p + r else 0.0


def ancestors(path: str | None) -> set[str]:
    """A(c): every prefix of c, c included; empty for a missing prediction."""
    if not path:
        return set()
    nodes = split_path(path)
    return {SEPARATOR.join(nodes[:k]) for k in range(1, len(nodes) + 1)}


def at_level(path: str | None, level: int) -> str | None:
    """The node of `path` at `level` (identified by its prefix), None when the path is shorter."""
    if not path:
        return None
    nodes = split_path(path)
    return SEPARATOR.join(nodes[:level]) if len(nodes) >= level else None


def lenient_references(preds: Sequence[str | None], truths: Sequence[str], potentials: Sequence[Sequence[str]]) -> list[str]:
    """The prediction counts as the reference when it is the ground truth or one of the potentials."""
    return [
        pred if pred and (pred == truth or pred in alts) else truth
        for pred, truth, alts in zip(preds, truths, potentials, strict=True)
    ]


def hierarchical_prf(preds: Sequence[str | None], refs: Sequence[str]) -> PRF:
    """Micro-averaged over the corpus: sums of |A(pred) & A(ref)|, |A(pred)|, |A(ref)|."""
    overlap = predicted = relevant = 0
    for pred, ref in zip(preds, refs, strict=True):
        a_pred, a_ref = ancestors(pred), ancestors(ref)
        overlap += len(a_pred & a_ref)
        predicted += len(a_pred)
        relevant += len(a_ref)
    p = overlap / predicted if predicted else 0.0
    r = overlap / relevant if relevant else 0.0
    return PRF(p, r, _f1(p, r))


def macro_prf(preds: Sequence[str | None], refs: Sequence[str | None], labels: Sequence[str] | None = None) -> PRF:
    """Macro P/R/F1 over `labels` (default: the union of non-null predicted and reference labels).

    Per-label P or R is 0 when its denominator is 0; macro values are plain means over labels.
    """
    tp: Counter[str] = Counter()
    fp: Counter[str] = Counter()
    fn: Counter[str] = Counter()
    for pred, ref in zip(preds, refs, strict=True):
        if pred == ref and pred:
            tp[pred] += 1
            continue
        if pred:
            fp[pred] += 1
        if ref:
            fn[ref] += 1
    if labels is None:
        labels = sorted({*tp, *fp, *fn})
    if not labels:
        return PRF(0.0, 0.0, 0.0)
    ps, rs, fs = [], [], []
    for label in labels:
        p = tp[label] / (tp[label] + fp[label]) if tp[label] + fp[label] else 0.0
        r = tp[label] / (tp[label] + fn[label]) if tp[label] + fn[label] else 0.0
        ps.append(p)
        rs.append(r)
        fs.append(_f1(p, r))
    n = len(labels)
    return PRF(sum(ps) / n, sum(rs) / n, sum(fs) / n)


def macro_at_level(preds: Sequence[str | None], refs: Sequence[str], level: int) -> PRF:
    """Examples whose reference is shorter than `level` are skipped; a shorter prediction is null."""
    pairs = [(at_level(p, level), at_level(r, level)) for p, r in zip(preds, refs, strict=True)]
    kept = [(p, r) for p, r in pairs if r is not None]
    return macro_prf([p for p, _ in kept], [r for _, r in kept])


def macro_levels(truths: Sequence[str], depth: Depth = MAX_LEVEL) -> range:
    """The levels that get a macro figure: 1..depth (the reference's L1-L3 at depth 3, whether or not a
    label reaches L3); at full depth (None) 1 to the deepest ground truth, since deeper levels have no
    example to score."""
    deepest = max((len(split_path(t)) for t in truths if t), default=1) if depth is None else depth
    return range(1, deepest + 1)


def path_metrics(preds: Sequence[str | None], refs: Sequence[str], levels: Sequence[int] = range(1, MAX_LEVEL + 1)) -> dict:
    return {
        "hierarchical": hierarchical_prf(preds, refs).as_dict(),
        "macro": {f"l{k}": macro_at_level(preds, refs, k).as_dict() for k in levels},
    }


def evaluate_paths(
    preds: Sequence[str | None], truths: Sequence[str], potentials: Sequence[Sequence[str]], depth: Depth = MAX_LEVEL
) -> dict[str, dict]:
    """The reference's `strict` and `lenient` blocks for path predictions (retrieval, reranking); macro
    figures per level of the taxonomy `depth` the labels were trimmed to (macro_levels)."""
    levels = macro_levels(truths, depth)
    return {
        "strict": path_metrics(preds, truths, levels),
        "lenient": path_metrics(preds, lenient_references(preds, truths, potentials), levels),
    }


def evaluate_l1(
    preds: Sequence[str | None], truths: Sequence[str], potentials: Sequence[Sequence[str]], labels: Sequence[str]
) -> dict[str, dict]:
    """NLI: L1 macro P/R/F1 over the sorted L1 labels, references and potentials reduced to L1."""
    refs = [at_level(t, 1) for t in truths]
    alts = [[at_level(p, 1) for p in ps] for ps in potentials]
    labels = sorted(labels)
    return {
        "strict": macro_prf(preds, refs, labels).as_dict(),
        "lenient": macro_prf(preds, lenient_references(preds, refs, alts), labels).as_dict(),
    }


def latency_summary(latencies_ms: Sequence[float], batch_size: int) -> dict[str, float | int]:
    """Per-request p50/p95 with linear interpolation (numpy's default)."""
    values = np.asarray(latencies_ms, dtype=float)
    if values.size == 0:
        return {"p50": 0.0, "p95": 0.0, "request_count": 0, "batch_size": batch_size}
    return {
        "p50": float(np.percentile(values, 50)),
        "p95": float(np.percentile(values, 95)),
        "request_count": int(values.size),
        "batch_size": batch_size,
    }
