"""The category-document variants a model's category index is built for (one model x variant partition
each), and which of them an approach that reads several at once uses.

- `full-path`, `leaf` (retrieval/categories.py): one document per L1-L3 node;
- `full-depth` (retrieval/full_depth.py): one document per node of the full taxonomy, down to L8; an
  L1-L3 node takes the best score of the documents that trim to it.

Every variant's document scores become L1-L3 node scores the same way (full_depth.best_per_node: with
one document per node that is the document's own score), so every approach can read any variant.
"""

from __future__ import annotations

from collections.abc import Sequence

from taxo_pipeline.dataset.taxonomy import TrimmedTaxonomy
from taxo_pipeline.retrieval.categories import FULL_PATH, LEAF, NODE_VARIANTS, CategoryDocuments, category_documents
from taxo_pipeline.retrieval.full_depth import FULL_DEPTH, full_depth_documents

VARIANTS = (*NODE_VARIANTS, FULL_DEPTH)
BOTH = "both"  # what score fusion reads: full-path and leaf, fused


def variant_documents(taxonomy: TrimmedTaxonomy, variant: str, categories: Sequence[str] | None = None) -> CategoryDocuments:
    """The variant's documents; `categories` (every category of the full taxonomy) for full-depth."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}: expected one of {', '.join(VARIANTS)}")
    if variant != FULL_DEPTH:
        return category_documents(taxonomy, variant)
    if categories is None:
        raise ValueError("the full-depth documents need every category of the full taxonomy: materialize taxonomy_full_depth")
    return full_depth_documents(categories, taxonomy)


def variants_read(documents: str) -> tuple[str, ...]:
    """The indexed variants behind the documents an approach reads: one variant, or `both`."""
    if documents == BOTH:
        return (FULL_PATH, LEAF)
    if documents in VARIANTS:
        return (documents,)
    raise ValueError(f"unknown category documents {documents!r}: expected one of {', '.join((*VARIANTS, BOTH))}")
