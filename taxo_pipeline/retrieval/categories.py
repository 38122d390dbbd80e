"""What a category looks like to an encoder: its full path or its leaf name (the two variants)."""

from __future__ import annotations

from dataclasses import dataclass

from taxo_pipeline.dataset.taxonomy import TaxonomyL3, split_path

VARIANTS = ("full-path", "leaf")


@dataclass(frozen=True)
class CategoryDocuments:
    ids: list[str]  # the full path: what a prediction returns
    documents: list[str]  # the text that gets encoded
    levels: list[int]


def category_documents(taxonomy: TaxonomyL3, variant: str) -> CategoryDocuments:
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}: expected one of {', '.join(VARIANTS)}")
    nodes = [split_path(p) for p in taxonomy.paths]
    documents = list(taxonomy.paths) if variant == "full-path" else [n[-1] for n in nodes]
    return CategoryDocuments(ids=list(taxonomy.paths), documents=documents, levels=[len(n) for n in nodes])
