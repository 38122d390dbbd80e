"""What an L1-L3 node looks like to an encoder: its full path or its leaf name (one document per node)."""

from __future__ import annotations

from dataclasses import dataclass

from taxo_pipeline.dataset.taxonomy import TrimmedTaxonomy, split_path

FULL_PATH, LEAF = "full-path", "leaf"
NODE_VARIANTS = (FULL_PATH, LEAF)


@dataclass(frozen=True)
class CategoryDocuments:
    ids: list[str]  # the full path: what a prediction returns (full-depth: a path it trims to)
    documents: list[str]  # the text that gets encoded
    levels: list[int]


def category_documents(taxonomy: TrimmedTaxonomy, variant: str) -> CategoryDocuments:
    if variant not in NODE_VARIANTS:
        raise ValueError(f"unknown variant {variant!r}: expected one of {', '.join(NODE_VARIANTS)}")
    nodes = [split_path(p) for p in taxonomy.paths]
    documents = list(taxonomy.paths) if variant == FULL_PATH else [n[-1] for n in nodes]
    return CategoryDocuments(ids=list(taxonomy.paths), documents=documents, levels=[len(n) for n in nodes])
