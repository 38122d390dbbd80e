"""What a row of results was computed by and on: the key that `predictions`, `request_latencies` and
`metrics` share, and that the views, reports and commands read back."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import polars as pl

from taxo_pipeline.dataset.taxonomy import MAX_LEVEL, Depth, depth_label

# The evaluation tables' key columns, in this order.
KEY_COLUMNS = ("approach", "model", "reranker", "variant", "dataset")


@dataclass(frozen=True)
class ResultKey:
    approach: str
    model: str  # the model the partition runs (a reranking partition: the retriever)
    variant: str  # category documents: full-path, leaf, full-depth, both (score fusion's), l1 (NLI)
    reranker: str | None = None
    # Fingerprint of the product set the results are about: a --limit run or another catalogue never
    # replaces the full evaluation's rows.
    dataset: str = ""

    @property
    def columns(self) -> dict[str, str | None]:
        return {"approach": self.approach, "model": self.model, "reranker": self.reranker, "variant": self.variant,
                "dataset": self.dataset}  # fmt: skip

    @property
    def models(self) -> str:
        """The model column as people say it: `retriever + reranker` for a reranking pair."""
        return f"{self.model} + {self.reranker}" if self.reranker else self.model

    def on(self, dataset: str) -> ResultKey:
        return ResultKey(self.approach, self.model, self.variant, self.reranker, dataset)

    def __str__(self) -> str:
        return f"{self.approach} {self.models} {self.variant}"


def product_set_fingerprint(products: pl.DataFrame, depth: Depth = MAX_LEVEL) -> str:
    """Which products a result covers and what they say, independent of row order: ids alone are row
    numbers in some sources, so the texts and labels count too. Labels trimmed to another depth than 3
    make another dataset even where no label is deeper than 3 levels (depth 3 keeps its fingerprints)."""
    columns = [c for c in ("product_id", "product_title", "product_description", "ground_truth_category") if c in products.columns]
    rows = sorted(products.select(columns).fill_null("").iter_rows())
    digest = hashlib.sha256()
    if depth != MAX_LEVEL:
        digest.update(f"depth={depth_label(depth)}".encode() + b"\x1e")
    for row in rows:
        digest.update("\x1f".join(row).encode() + b"\x1e")
    return digest.hexdigest()[:16]
