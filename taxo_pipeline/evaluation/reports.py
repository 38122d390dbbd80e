"""The eval commands' JSON, in the reference's formats (seed-rules.md, "Output of the eval commands")."""

from __future__ import annotations

import json
from pathlib import Path

from taxo_pipeline.files import write_atomic


def retrieval_report(*, model, variant, index_dir, rebuild, limit, count, metrics, latency) -> dict:
    return {
        "model": model,
        "variant": variant,
        "index_dir": str(index_dir),
        "rebuild": rebuild,
        "limit": limit,
        "count": count,
        "strict": metrics["strict"],
        "lenient": metrics["lenient"],
        "latency_ms": latency,
    }


def nli_report(*, model, limit, count, metrics, latency) -> dict:
    return {
        "model": model,
        "limit": limit,
        "count": count,
        "strict": metrics["strict"],
        "lenient": metrics["lenient"],
        "latency_ms": latency,
    }


def reranking_report(
    *, retrieval_model, reranker_model, variant, index_dir, rebuild, top_k, limit, count, metrics,
    retrieval_latency, reranking_latency,
) -> dict:
    return {
        "retrieval_model": retrieval_model,
        "reranker_model": reranker_model,
        "variant": variant,
        "index_dir": str(index_dir),
        "rebuild": rebuild,
        "top_k": top_k,
        "limit": limit,
        "count": count,
        "strict": metrics["strict"],
        "lenient": metrics["lenient"],
        "retrieval_latency_ms": retrieval_latency,
        "reranking_latency_ms": reranking_latency,
    }


def write_report(report: dict, path: Path) -> None:
    text = json.dumps(report, indent=2) + "\n"
    write_atomic(Path(path), lambda tmp: tmp.write_text(text))
