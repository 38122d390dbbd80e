"""The eval commands' JSON, in the reference's formats (seed-rules.md, "Output of the eval commands")."""

from __future__ import annotations

import json
import os
from pathlib import Path

from taxo_pipeline.evaluation.keys import ResultKey


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
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.part")
    tmp.write_text(json.dumps(report, indent=2) + "\n")
    os.replace(tmp, path)
