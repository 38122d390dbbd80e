"""What an approach is: a plain classifier (no Dagster) and the facts the pipeline needs to run,
evaluate and report it. The Dagster assets, jobs, commands and reports are built from these specs
(taxo_pipeline/approaches/registry.py lists them)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from taxo_pipeline.approaches.evidence import Evidence
from taxo_pipeline.dataset.taxonomy import TrimmedTaxonomy

# Which partitions an approach runs on (taxo_pipeline/defs/models/partitions.py maps each to Dagster's):
MODEL_VARIANT = "model_variant"  # an encoder x one category-document variant
MODEL = "model"  # an encoder; the approach reads the category documents it names (`documents`) itself
NLI_MODEL = "nli_model"  # an NLI model
RERANKER_RETRIEVER = "reranker_retriever"  # a reranker x an encoder that retrieves its candidates
PARTITIONINGS = (MODEL_VARIANT, MODEL, NLI_MODEL, RERANKER_RETRIEVER)

HIERARCHICAL = "hierarchical"  # headline: hierarchical F1 of the predicted path
L1 = "l1"  # headline: macro F1 over the L1 labels (approaches that predict the top level only)

ZERO_SHOT = "zero-shot"

Ranked = list[list[tuple[str, float]]]  # per product, (category, score) best first


@dataclass(frozen=True)
class ClassifyRequest:
    """Everything a classifier reads: the products (any set, labelled or not), the taxonomy, the
    models of the partition, and the models' outputs through `evidence`."""

    products: pl.DataFrame  # product_id, product_title, product_description (product_image if any)
    taxonomy: TrimmedTaxonomy
    evidence: Evidence
    model: str
    variant: str
    model_family: str  # the catalogue family of `model`: text or image (nli and rerank for their own)
    reranker: str | None = None
    top_k: int = 5
    batch_size: int = 64
    # Labelled products approaches with `needs_labels` learn from. Evaluation passes the products
    # themselves with `cross_validate`: a product is then never its own evidence.
    labelled: pl.DataFrame | None = None
    cross_validate: bool = False
    # Reviewers' corrections (dataset/corrections.py, the same columns as `labelled`): they join the labelled
    # pool as evidence but are never scored, so the evaluation's figures stay comparable.
    corrections: pl.DataFrame | None = None
    # A catalogue's own labelled products (classification/catalogue_labels.py): their votes are added to the
    # pool's with the weight chosen on them, for approaches that learn from labels.
    voters: Voters | None = None


@dataclass(frozen=True)
class Voters:
    """Labelled products outside the evaluation's pool that vote too, with their own vote weight."""

    vectors: np.ndarray  # unit-length product vectors
    labels: np.ndarray  # each one's category: an index into the request's taxonomy.paths
    ids: np.ndarray  # each one's product id: a product is never its own voter
    weight: float
    prior_weight: float = 0.0  # of their category shares
    pool_scale: float = 1.0  # the evaluation's pool votes with its own weight times this (0: not at all)


@dataclass(frozen=True)
class Classified:
    product_ids: list[str]  # the products classified, in the order of `ranked` (some may be skipped)
    ranked: Ranked
    # Facts about the run the UI shows: numbers, text, or tables (polars frames, shown as markdown).
    notes: Mapping[str, int | float | str | pl.DataFrame] = field(default_factory=dict)
    skipped: Mapping[str, str] = field(default_factory=dict)  # product id -> why it got no prediction


@dataclass(frozen=True)
class Approach:
    name: str  # the `approach` value in the result tables, and the asset and command name
    description: str  # one line: what it does
    classify: Callable[[ClassifyRequest], Classified]
    partitioning: str  # one of PARTITIONINGS
    families: tuple[str, ...]  # model families (of the partition's model) it classifies with; others are skipped
    stage: str  # the SIE stage whose request latencies are the approach's reported latency
    batch_size: int  # inputs per SIE request by default
    headline: str = HIERARCHICAL
    needs_labels: bool = False
    evaluation: str = ZERO_SHOT  # how its figures are obtained
    report: str = "retrieval"  # the eval command's JSON shape: retrieval, nli or reranking
    reads: tuple[str, ...] = ()  # approaches whose results must exist first (their assets come upstream)
    query: str = "text"  # what `predict` asks for: the product's text, or its image
    prints_distance: bool = False  # `predict` prints cosine distance (1 - score), as the reference's retrieval does
    score: str = "the approach's score: higher is better"  # what `predict` says its numbers mean
    # What it classifies against where its partitioning has no variant dimension, and so its results'
    # variant: a category-document variant, `both` (full-path and leaf, fused) or `l1` (NLI's L1 labels).
    documents: str | None = None

    def __post_init__(self):
        if self.partitioning not in PARTITIONINGS:
            raise ValueError(f"approach {self.name!r}: unknown partitioning {self.partitioning!r}")
        has_variant = self.partitioning in (MODEL_VARIANT, RERANKER_RETRIEVER)
        if has_variant and self.documents is not None:
            raise ValueError(f"approach {self.name!r}: a {self.partitioning} approach reads its partition's variant, "
                             f"not documents={self.documents!r}")  # fmt: skip
        if not has_variant and not self.documents:
            raise ValueError(f"approach {self.name!r}: a {self.partitioning} approach must name the documents it reads "
                             "(its partitions have no variant)")  # fmt: skip
        if self.headline not in (HIERARCHICAL, L1):
            raise ValueError(f"approach {self.name!r}: unknown headline {self.headline!r}")

    @property
    def slug(self) -> str:
        """Python-identifier form of the name: asset and group names."""
        return self.name.replace("-", "_")
