"""The (product text, category document) pairs an encoder is fine-tuned on.

Labelled products come from three kinds of file, each read as it is: a catalogue the pipeline classifies
(with a `category` column; a Shopify export's Product Category), the merchant rows of
../shared/data/shopify-merchant-exports/rows.jsonl (`title`, `description`, `vendor`, `product_type`,
`category`, and the shop in `source_repo`), and the evaluation's own table. A product's text is what
retrieval queries with (title_and_description); its category document is the category's full path at the
run's depth, the full-path document retrieval encodes. One shop can hold most of a file (68% of the
merchant rows are one furniture shop), so every source is capped at the same number of products.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from pathlib import Path

import polars as pl

from taxo_pipeline.classification.catalogue_labels import label_at_depth, read_labels
from taxo_pipeline.dataset.taxonomy import TrimmedTaxonomy
from taxo_pipeline.dataset.texts import truncate_for_model
from taxo_pipeline.errors import InputError
from taxo_pipeline.evaluation.protocol import DEV, TEST, split_mask
from taxo_pipeline.retrieval.queries import title_and_description_queries
from taxo_pipeline.training.encoder import TrainingSettings

# source: the shop or file a product came from, the unit of capping and of leave-shops-out splits
ROWS_SCHEMA = {"source": pl.String, "product_title": pl.String, "product_description": pl.String, "category": pl.String}
PAIRS_SCHEMA = {"source": pl.String, "anchor": pl.String, "positive": pl.String}
MERCHANT_COLUMNS = {"title", "category", "source_repo"}
READ_SHARD = 4096


def read_labelled(path: Path, taxonomy: TrimmedTaxonomy) -> pl.DataFrame:
    """One file's labelled products (ROWS_SCHEMA), labels trimmed to the taxonomy's depth; rows whose
    label is no node of it are left out."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"training products file {path} (TAXO_TRAINING_PRODUCTS) does not exist")
    try:
        if path.suffix == ".jsonl" and MERCHANT_COLUMNS <= _first_record(path).keys():
            rows = _merchant_rows(path, taxonomy)
        else:
            labels = read_labels(path, READ_SHARD, taxonomy).products
            rows = labels.select(pl.lit(path.name).alias("source"), "product_title", "product_description",
                                 pl.col("ground_truth_category").alias("category"))  # fmt: skip
    except InputError:  # the catalogue reader's own error names the file and the row
        raise
    except (ValueError, pl.exceptions.PolarsError) as exc:  # json and polars parse errors
        raise InputError(f"training products file {path} (TAXO_TRAINING_PRODUCTS) cannot be read: {exc}") from exc
    if not rows.height:
        raise InputError(f"training products file {path} (TAXO_TRAINING_PRODUCTS) has no product labelled with a node of "
                         f"the {taxonomy.name}: a `category` column of taxonomy paths is needed")  # fmt: skip
    return rows


def _first_record(path: Path) -> dict:
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if line.strip():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ValueError(f"line {number} is not JSON ({exc})") from exc
                return record if isinstance(record, dict) else {}
    return {}


def _merchant_rows(path: Path, taxonomy: TrimmedTaxonomy) -> pl.DataFrame:
    rows = pl.read_ndjson(path, infer_schema_length=None)
    nodes = set(taxonomy.paths)
    labels = [label_at_depth(c, nodes, taxonomy.depth) for c in rows["category"].to_list()]
    # The merchant's own product type and vendor are text about the product like its description.
    parts = [c for c in ("product_type", "vendor", "description") if c in rows.columns]
    texts = [pl.when(pl.col(c).str.strip_chars() != "").then(pl.col(c).str.strip_chars()) for c in parts]
    return rows.select(
        pl.col("source_repo").fill_null(path.name).alias("source"),
        pl.col("title").fill_null("").alias("product_title"),
        (pl.concat_str(texts, separator=". ", ignore_nulls=True).fill_null("") if texts else pl.lit("")).alias("product_description"),
        pl.Series("category", labels, pl.String),
    ).filter(pl.col("category").is_not_null())


def evaluation_rows(experiment: pl.DataFrame, corrections: pl.DataFrame | None = None) -> pl.DataFrame:
    """The labelled products the evaluation protocol lets a model learn from (ROWS_SCHEMA): the development
    part of the evaluation table, and reviewers' corrections except those of products in its test part, so
    no figure reported on the test part was trained on."""
    dev = pl.Series(split_mask(experiment["product_id"].to_list(), DEV))
    if corrections is None or not corrections.height:
        return _labelled(experiment.filter(dev), "evaluation dev part")
    # a corrected product learns its corrected label only; a tested one none
    corrected, tested = corrections["product_id"], experiment.filter(~dev)["product_id"]
    return pl.concat([_labelled(experiment.filter(dev).filter(~pl.col("product_id").is_in(corrected)), "evaluation dev part"),
                      _labelled(corrections.filter(~pl.col("product_id").is_in(tested)), "corrections")])  # fmt: skip


def without_tested(rows: pl.DataFrame, experiment: pl.DataFrame) -> tuple[pl.DataFrame, int]:
    """`rows` less those whose title and description are a product's of the protocol's test part (a training
    file may hold the evaluation's own products), and how many were dropped."""
    tested = experiment.filter(pl.Series(split_mask(experiment["product_id"].to_list(), TEST)))
    texts = tested.select(_text_key("product_title", "product_description").alias("key"))["key"]
    kept = rows.filter(~_text_key("product_title", "product_description").is_in(texts))
    return kept, rows.height - kept.height


def _text_key(title: str, description: str) -> pl.Expr:
    return pl.concat_str([pl.col(title).fill_null("").str.strip_chars().str.to_lowercase(),
                          pl.col(description).fill_null("").str.strip_chars().str.to_lowercase()], separator="\n")  # fmt: skip


def _labelled(frame: pl.DataFrame, source: str) -> pl.DataFrame:
    return frame.select(pl.lit(source).alias("source"), pl.col("product_title").fill_null(""),
                        pl.col("product_description").fill_null(""), pl.col("ground_truth_category").alias("category"))  # fmt: skip


def training_rows(files: Iterable[Path], taxonomy: TrimmedTaxonomy) -> pl.DataFrame:
    """Every file's labelled products (ROWS_SCHEMA), in order."""
    parts = [read_labelled(f, taxonomy) for f in files]
    return pl.concat(parts) if parts else pl.DataFrame(schema=ROWS_SCHEMA)


def capped(rows: pl.DataFrame, per_source: int, seed: int) -> pl.DataFrame:
    """At most `per_source` products of each source: a sample seeded by the source's name, so a source
    keeps its sample when other sources come or go."""
    kept = []
    for (source,), frame in rows.group_by("source", maintain_order=True):
        if frame.height > per_source:
            frame = frame.sample(per_source, seed=_seed(f"{seed}/{source}"))
        kept.append(frame)
    return pl.concat(kept) if kept else rows


def pairs(rows: pl.DataFrame, max_text_chars: int) -> pl.DataFrame:
    """PAIRS_SCHEMA: the product's query text and its category's document, each pair once."""
    texts = title_and_description_queries(rows["product_title"].to_list(), rows["product_description"].to_list())
    anchors, _ = truncate_for_model(texts, max_text_chars)
    frame = pl.DataFrame({"source": rows["source"], "anchor": anchors, "positive": rows["category"]}, schema=PAIRS_SCHEMA)
    return frame.filter(pl.col("anchor").str.strip_chars() != "").unique(["anchor", "positive"], maintain_order=True)


def training_set(rows: pl.DataFrame, taxonomy: TrimmedTaxonomy, settings: TrainingSettings, max_text_chars: int) -> pl.DataFrame:
    """The pairs an encoder is trained on (PAIRS_SCHEMA): every source capped, and the taxonomy's own pairs
    if the settings ask for them."""
    frame = pairs(capped(rows, settings.per_source_cap, settings.seed), max_text_chars)
    return pl.concat([frame, taxonomy_pairs(taxonomy)]) if settings.taxonomy_pairs else frame


def taxonomy_pairs(taxonomy: TrimmedTaxonomy) -> pl.DataFrame:
    """Pairs from the taxonomy alone: a node's own name as the query for its full path (deeper nodes than
    level 1 only: a level-1 name is its path)."""
    deeper = [p for p in taxonomy.paths if " > " in p]
    return pl.DataFrame({"source": ["taxonomy"] * len(deeper), "anchor": [p.rsplit(" > ", 1)[1] for p in deeper],
                         "positive": deeper}, schema=PAIRS_SCHEMA)  # fmt: skip


def pairs_fingerprint(frame: pl.DataFrame) -> str:
    """Changes when any pair changes, is added or removed, or the order changes (order is training order)."""
    digest = hashlib.sha256()
    for row in frame.select("anchor", "positive").iter_rows():
        digest.update(json.dumps(row).encode())
    return digest.hexdigest()


def split_sources(sources: Sequence[str], folds: int, seed: int) -> dict[str, int]:
    """{source: fold}: a hash of the source's name, so a shop's fold never depends on the other shops."""
    return {s: _seed(f"folds/{seed}/{s}") % folds for s in sorted(set(sources))}


def _seed(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big") % 2**31
