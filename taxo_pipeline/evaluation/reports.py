"""The eval commands' JSON, in the reference's formats (seed-rules.md, "Output of the eval commands")."""

from __future__ import annotations

import json
from pathlib import Path

from taxo_pipeline.evaluation.keys import ResultKey
from taxo_pipeline.files import write_atomic


def report_for(kind: str, *, key: ResultKey, args, count: int, metrics: dict, index_dir, latencies: dict) -> dict:
    """The eval command's JSON for an approach whose report shape is `kind` (retrieval, nli or
    reranking); `latencies` holds the latency block of each stage the approach recorded."""
    scores = {"limit": args.limit, "count": count, "strict": metrics["strict"], "lenient": metrics["lenient"]}
    if kind == "nli":
        return {"model": key.model, **scores, "latency_ms": latencies["extract"]}
    index = {"index_dir": str(index_dir), "rebuild": args.rebuild}
    if kind == "reranking":
        return {
            "retrieval_model": key.model, "reranker_model": key.reranker, "variant": key.variant, **index,
            "top_k": args.top_k, **scores, "retrieval_latency_ms": latencies["query_encode"],
            "reranking_latency_ms": latencies["rerank"],
        }  # fmt: skip
    return {"model": key.model, "variant": key.variant, **index, **scores, "latency_ms": latencies["query_encode"]}


def write_report(report: dict, path: Path) -> None:
    text = json.dumps(report, indent=2) + "\n"
    write_atomic(Path(path), lambda tmp: tmp.write_text(text))
