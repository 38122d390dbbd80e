"""Quality on held-out rows: strict hF1 of every approach and category-document construction on the
protocol's development and test parts, for each model (issue 13; a second model: issue 20).

    uv run python bench/quality.py [--models M,...] [--products P] [--taxonomy T] [--cache DIR] [--no-cache]
                                   [--no-enriched]

--models: catalogue ids, default all-MiniLM-L6-v2 plus sentence-transformers/all-mpnet-base-v2 once
bench/mpnet.py has assembled it. Each model gets its own tables, then one table puts every approach's test
figure and ratio side by side.

Protocol (taxo_pipeline/evaluation/protocol.py): the products are split once by a hash of their id into
a development part and a test part. Every choice (document construction, which approach is "best", the
label-transfer settings) is made here on the dev part by the script itself, then reported on the test part.
Each figure's `how` column says how it was obtained:
- zero-shot: no label is read; each product is classified on its own, so one run over every row is
  scored on each part;
- cv in dev / dev pool: label transfer. Dev figure: 5-fold cross-validation inside the dev part (a
  product never votes for itself, the vote weight is chosen on the other folds). Test figure: the dev
  products are the labelled pool (vote weight chosen by cross-validation on them alone), as a user's
  unseen catalogue is classified with the sample as its pool; no test label is ever read.
Ratios are to the reference (text-retrieval, full-path) on the same rows; the test ratio comes with a 90%
paired bootstrap interval over the test rows.

The existing approaches run through their own `classify` (taxo_pipeline/approaches/*) with an in-process
stand-in for SIE; the reference queries a real Chroma index like the pipeline (HNSW, rebuilt each run:
it may flip one product, +-0.002 hF1). Vectors come from sentence-transformers in-process (the same
weights SIE serves; equal up to float noise), cached per model in --cache between runs. Cold, encoding the
14,606 full-depth documents dominates: about 6.5 minutes on 2 busy cores with all-MiniLM-L6-v2, several
times that with all-mpnet-base-v2; warm, under a minute.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import mpnet
import numpy as np
import polars as pl

from taxo_pipeline.approaches import (
    hierarchical_cascade,
    label_transfer,
    score_fusion,
    text_retrieval,
    title_description,
)
from taxo_pipeline.approaches.evidence import Evidence
from taxo_pipeline.approaches.spec import ClassifyRequest
from taxo_pipeline.dataset.cleaning import clean_products
from taxo_pipeline.dataset.products import read_products
from taxo_pipeline.dataset.taxonomy import SEPARATOR, TrimmedTaxonomy, parse_categories, split_path
from taxo_pipeline.dataset.trimming import trim_products
from taxo_pipeline.evaluation.metrics import ancestors
from taxo_pipeline.evaluation.protocol import DEV, DEV_FRACTION, TEST, split_mask
from taxo_pipeline.retrieval.cascade import Hierarchy, node_scores, path_scores
from taxo_pipeline.retrieval.categories import category_documents
from taxo_pipeline.retrieval.chroma_index import CategoryIndex
from taxo_pipeline.retrieval.exact_search import cosine_scores, normalise
from taxo_pipeline.retrieval.full_depth import FULL_DEPTH, best_per_node, full_depth_documents
from taxo_pipeline.retrieval.fusion import ScoreSource, fuse
from taxo_pipeline.retrieval.neighbour_votes import (
    NEIGHBOURS,
    TEMPERATURE,
    VOTE_WEIGHTS,
    assign_folds,
    transfer_labels,
    transfer_to_unlabelled,
)
from taxo_pipeline.retrieval.queries import title_and_description_queries
from taxo_pipeline.settings import DEFAULT_MAX_TEXT_CHARS
from taxo_pipeline.sie.model_catalogue import PACKAGED_CATALOGUE, ModelSpec, load_catalogue

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "data"
MODEL = "sentence-transformers/all-MiniLM-L6-v2"
ENRICHED_BUDGETS = (64, 128, 256)  # token budgets of the `enriched-N` documents tried
REFERENCE = ("text-retrieval", "full-path")
ZERO_SHOT, CV_DEV_POOL = "zero-shot", "cv in dev / dev pool"


def model_spec(model: str) -> ModelSpec:
    """The catalogue entry of `model`; all-mpnet-base-v2's points at the folder bench/mpnet.py assembles."""
    if model == mpnet.MODEL:
        if found := mpnet.problems(mpnet.model_dir()):
            raise SystemExit(f"{model} is not assembled ({found[0]}): run `uv run python bench/mpnet.py` first")
        return mpnet.spec()
    return load_catalogue(PACKAGED_CATALOGUE)[model]


def default_models() -> list[str]:
    """all-MiniLM-L6-v2, and all-mpnet-base-v2 when it is assembled (it is not a dependency)."""
    return [MODEL] + ([] if mpnet.problems(mpnet.model_dir()) else [mpnet.MODEL])


def model_list(text: str) -> list[str]:
    """--models: comma-separated catalogue ids."""
    return [m.strip() for m in text.split(",") if m.strip()]


def cache_file(cache_dir: Path | None, model: str) -> Path | None:
    return cache_dir / f"{model.split('/')[-1]}.npz" if cache_dir else None


class Encoder:
    """A catalogue model's local weights in-process; vectors cached by sha256 of the text in one .npz file."""

    SAVE_EVERY = 2048  # texts: a long cold run (all-mpnet-base-v2) keeps what it encoded if stopped

    def __init__(self, model: str, cache: Path | None, spec: ModelSpec | None = None):
        """`spec`: weights other than the catalogue's for `model` (a fine-tuned encoder's)."""
        import torch
        from sentence_transformers import SentenceTransformer

        torch.set_num_threads(2)
        spec = spec or model_spec(model)
        self.model_id = model
        # the sequence limit, [CLS] and [SEP] included
        self.max_tokens = int(spec.server["max_sequence_length"])
        self.model = SentenceTransformer(str(spec.resolve_weights()), device="cpu")
        self.cache, self.vectors = cache, {}
        if cache and cache.exists():
            stored = np.load(cache)
            self.vectors = dict(zip(stored["keys"].tolist(), stored["vectors"]))

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        keys = [hashlib.sha256(t.encode()).hexdigest() for t in texts]
        missing = list(dict.fromkeys(t for t, k in zip(texts, keys) if k not in self.vectors))
        if missing:
            print(f"{self.model_id}: encoding {len(missing)} texts", file=sys.stderr, flush=True)
        for start in range(0, len(missing), self.SAVE_EVERY):
            chunk = missing[start : start + self.SAVE_EVERY]
            for text, vector in zip(chunk, self.model.encode(chunk, batch_size=64, convert_to_numpy=True)):
                self.vectors[hashlib.sha256(text.encode()).hexdigest()] = vector
            self.save()
        return np.stack([self.vectors[k] for k in keys]).astype(np.float32)

    def save(self) -> None:
        if self.cache:
            self.cache.parent.mkdir(parents=True, exist_ok=True)
            keys = np.array(list(self.vectors))
            np.savez(self.cache, keys=keys, vectors=np.stack([self.vectors[k] for k in keys]))

    def tokens(self, text: str) -> int:
        return len(self.model.tokenizer(text, verbose=False)["input_ids"])


@dataclass(frozen=True)
class Data:
    products: pl.DataFrame
    taxonomy: TrimmedTaxonomy
    categories: list[str]
    dev: np.ndarray  # bool per product

    @property
    def truths(self) -> list[str]:
        return self.products["ground_truth_category"].to_list()

    def labels(self) -> np.ndarray:
        column = {p: i for i, p in enumerate(self.taxonomy.paths)}
        return np.array([column[t] for t in self.truths])

    def part(self, part: str) -> np.ndarray:
        return self.dev if part == DEV else ~self.dev


def load(products: Path, taxonomy: Path) -> Data:
    categories = parse_categories(taxonomy)
    l3 = TrimmedTaxonomy.from_categories(categories)
    clean, _ = clean_products(read_products(products), categories)
    frame = trim_products(clean, l3)
    return Data(frame, l3, categories, split_mask(frame["product_id"].to_list(), DEV))


class LocalEvidence(Evidence):
    """approaches.evidence.Evidence with the in-process encoder instead of SIE."""

    def __init__(self, encoder: Encoder, data: Data, index_dir: Path):
        super().__init__(None, index_dir, data.taxonomy, data.categories, max_chars=DEFAULT_MAX_TEXT_CHARS)
        self.encoder, self.indexes = encoder, {}

    def encode(self, model, inputs, *, is_query, batch_size, stage=None) -> np.ndarray:
        return self.encoder(list(inputs))

    def category_index(self, model: str, variant: str) -> CategoryIndex:
        if variant not in self.indexes:
            self.indexes[variant] = CategoryIndex(self.index_dir, "bench", variant)
            self.indexes[variant].sync(self.category_documents(variant), self.category_vectors(model, variant))
        return self.indexes[variant]


def enriched_documents(data: Data, budget: int, tokens: Callable[[str], int]) -> list[str]:
    """Per L1-L3 node: its path, `: ` and the names of its deeper nodes in the full taxonomy, breadth
    first (children, then grandchildren ...), as many as fit in `budget` tokens."""
    below: dict[str, dict[int, list[str]]] = defaultdict(lambda: defaultdict(list))
    for category in data.categories:
        nodes = split_path(category)
        for level in range(1, min(3, len(nodes) - 1) + 1):
            below[SEPARATOR.join(nodes[:level])][len(nodes) - level].append(nodes[-1])
    documents = []
    for path in data.taxonomy.paths:
        kept: list[str] = []
        for name in dict.fromkeys(n for depth in sorted(below[path]) for n in below[path][depth]):
            if tokens(f"{path}: {', '.join([*kept, name])}") > budget:
                break
            kept.append(name)
        documents.append(f"{path}: {', '.join(kept)}" if kept else path)
    return documents


class Constructions:
    """Category documents by construction, and products x L1-L3 node scores against them."""

    def __init__(self, encoder: Encoder, data: Data, budgets: Sequence[int] = ENRICHED_BUDGETS):
        self.encoder, self.data, self.budgets = encoder, data, tuple(budgets)
        self.documents = {v: category_documents(data.taxonomy, v).documents for v in ("full-path", "leaf")}
        self.documents[FULL_DEPTH] = full_depth_documents(data.categories, data.taxonomy).documents
        for budget in self.budgets:
            self.documents[f"enriched-{budget}"] = enriched_documents(data, budget, encoder.tokens)

    def scores(self, name: str, queries: np.ndarray) -> np.ndarray:
        scores = cosine_scores(queries, self.encoder(self.documents[name]))
        return best_per_node(scores, self.documents[name], self.data.taxonomy) if name == FULL_DEPTH else scores

    def cascade(self, names: Sequence[str], queries: np.ndarray) -> np.ndarray:
        """The hierarchical cascade's path scores over the equal-weight fusion of `names`' scores."""
        hierarchy = Hierarchy.from_paths(self.data.taxonomy.paths)
        fused = fuse([ScoreSource(n, self.scores(n, queries), 1 / len(names)) for n in names])
        return path_scores(node_scores(fused, hierarchy), hierarchy)

    def token_table(self) -> pl.DataFrame:
        rows = []
        for name, documents in self.documents.items():
            counts = np.array([self.encoder.tokens(d) for d in documents])
            rows.append({"documents": name, "count": len(documents), "mean": round(float(counts.mean()), 1),
                         "p95": int(np.percentile(counts, 95)), "max": int(counts.max()),
                         f"over {self.encoder.max_tokens}": int((counts > self.encoder.max_tokens).sum())})  # fmt: skip
        return pl.DataFrame(rows)


@dataclass(frozen=True)
class Row:
    approach: str
    documents: str
    how: str
    predicted: list[str]  # per product, in the products' order: the top path


def _top(data: Data, scores: np.ndarray) -> list[str]:
    return [data.taxonomy.paths[i] for i in np.argmax(scores, axis=1)]


def _merge(data: Data, dev: list[str], test: list[str]) -> list[str]:
    """Per-part predictions (each in product order) back into one list in product order."""
    dev_iter, test_iter = iter(dev), iter(test)
    return [next(dev_iter) if d else next(test_iter) for d in data.dev]


def pipeline_rows(data: Data, evidence: LocalEvidence) -> list[Row]:
    """The registered approaches through their own classify, on the documents they read."""

    def run(module, variant: str, products: pl.DataFrame = data.products, **labelled) -> list[str]:
        request = ClassifyRequest(products=products, taxonomy=data.taxonomy, evidence=evidence,
                                  model=evidence.encoder.model_id, variant=variant, model_family="text", **labelled)  # fmt: skip
        return [ranked[0][0] for ranked in module.classify(request).ranked]

    dev, test = data.products.filter(pl.Series(data.dev)), data.products.filter(pl.Series(~data.dev))
    documents = label_transfer.APPROACH.documents
    transferred = _merge(
        data,
        run(label_transfer, documents, dev, labelled=dev, cross_validate=True),
        run(label_transfer, documents, test, labelled=dev),
    )
    return [
        Row(*REFERENCE, ZERO_SHOT, run(text_retrieval, "full-path")),
        Row("title-description", "full-path", ZERO_SHOT, run(title_description, "full-path")),
        Row("title-description", "leaf", ZERO_SHOT, run(title_description, "leaf")),
        Row("score-fusion", "full-path + leaf", ZERO_SHOT, run(score_fusion, score_fusion.APPROACH.documents)),
        Row("hierarchical-cascade", FULL_DEPTH, ZERO_SHOT,
            run(hierarchical_cascade, hierarchical_cascade.APPROACH.documents)),
        Row("label-transfer", documents, CV_DEV_POOL, transferred),
    ]


def zero_shot_rows(data: Data, built: Constructions, queries: dict[str, np.ndarray]) -> list[Row]:
    """The new constructions with the reference's query, title + description, and the cascade."""
    rows = [Row("text-retrieval", FULL_DEPTH, ZERO_SHOT, _top(data, built.scores(FULL_DEPTH, queries["description"])))]
    for name in (*(f"enriched-{b}" for b in built.budgets), FULL_DEPTH):
        rows.append(Row("title-description", name, ZERO_SHOT, _top(data, built.scores(name, queries["title"]))))
        rows.append(Row("hierarchical-cascade", name, ZERO_SHOT, _top(data, built.cascade([name], queries["title"]))))
    fused = ("full-path", "leaf", FULL_DEPTH)
    rows.append(
        Row("hierarchical-cascade", " + ".join(fused), ZERO_SHOT, _top(data, built.cascade(fused, queries["title"])))
    )
    return rows


def _dev_folds(data: Data) -> np.ndarray:
    return assign_folds(data.products["product_id"].filter(pl.Series(data.dev)).to_list())


def transfer_on_dev(data: Data, base: np.ndarray, vectors: np.ndarray, **voting: float) -> np.ndarray:
    """Label transfer onto the dev rows' `base` scores by 5-fold cross-validation inside the dev part."""
    dev = data.dev
    return transfer_labels(
        base[dev], vectors[dev], data.labels()[dev], _dev_folds(data), data.taxonomy.paths, **voting
    ).scores


def transfer(data: Data, base: np.ndarray, vectors: np.ndarray, **voting: float) -> list[str]:
    """Label transfer onto `base` scores: cv in dev for the dev rows, the dev pool for the test rows."""
    dev, test, labels = data.dev, ~data.dev, data.labels()
    on_test, _ = transfer_to_unlabelled(
        base[test], vectors[test], base[dev], vectors[dev], labels[dev], _dev_folds(data), data.taxonomy.paths, **voting
    )
    return _merge(data, _top(data, transfer_on_dev(data, base, vectors, **voting)), _top(data, on_test))


def settings_on_dev(data: Data, base: np.ndarray, vectors: np.ndarray) -> tuple[pl.DataFrame, dict[str, float]]:
    """Label transfer's neighbours and temperature by their cv-in-dev hF1; the best setting (ties: the
    a-priori one, listed first)."""
    truths = [t for t, d in zip(data.truths, data.dev) if d]
    grid = [{"neighbours": NEIGHBOURS, "temperature": TEMPERATURE}]
    grid += [
        {"neighbours": k, "temperature": t}
        for k in (5, 10, 20)
        for t in (0.02, 0.05, 0.1)
        if {"neighbours": k, "temperature": t} != grid[0]
    ]
    quality = [_hf1(_counts(_top(data, transfer_on_dev(data, base, vectors, **voting)), truths)) for voting in grid]
    table = pl.DataFrame(grid).with_columns(pl.Series("dev hF1 (cv in dev)", quality).round(3))
    return table, grid[int(np.argmax(quality))]


def centroid_votes(vectors: np.ndarray, labels: np.ndarray, categories: int, queries: np.ndarray) -> np.ndarray:
    """softmax(cosine(query, centroid) / T) over the categories that have labelled products, with the
    label-transfer temperature; a centroid is the mean of its products' unit vectors."""
    sums = np.zeros((categories, vectors.shape[1]))
    np.add.at(sums, labels, vectors)
    present = np.unique(labels)
    logits = queries @ normalise(sums[present]).T / TEMPERATURE
    weights = np.exp(logits - logits.max(axis=1, keepdims=True))
    votes = np.zeros((len(queries), categories))
    votes[:, present] = weights / weights.sum(axis=1, keepdims=True)
    return votes


def _centroid_cv(base: np.ndarray, vectors: np.ndarray, labels: np.ndarray, folds: np.ndarray, data: Data):
    """transfer_labels' nested cross-validation with centroid votes instead of neighbour votes."""
    scores, chosen, categories = base.copy(), {}, base.shape[1]
    for held_out in sorted(set(folds.tolist())):
        train = folds != held_out
        inner = np.zeros_like(base)
        for other in sorted(set(folds[train].tolist())):
            fit = train & (folds != other)
            inner[folds == other] = centroid_votes(vectors[fit], labels[fit], categories, vectors[folds == other])
        truths = [data.taxonomy.paths[i] for i in labels[train]]
        quality = [_hf1(_counts(_top(data, base[train] + w * inner[train]), truths)) for w in VOTE_WEIGHTS]
        chosen[held_out] = VOTE_WEIGHTS[int(np.argmax(quality))]
        votes = centroid_votes(vectors[train], labels[train], categories, vectors[~train])
        scores[~train] += chosen[held_out] * votes
    return scores, chosen


def centroid_transfer(data: Data, base: np.ndarray, vectors: np.ndarray) -> list[str]:
    dev, test, labels = data.dev, ~data.dev, data.labels()
    on_dev, weights = _centroid_cv(base[dev], vectors[dev], labels[dev], _dev_folds(data), data)
    weight = float(np.median(list(weights.values())))
    on_test = base[test] + weight * centroid_votes(vectors[dev], labels[dev], base.shape[1], vectors[test])
    return _merge(data, _top(data, on_dev), _top(data, on_test))


def _counts(predicted: Sequence[str], truths: Sequence[str]) -> np.ndarray:
    """Per product: |A(pred) & A(ref)|, |A(pred)|, |A(ref)|; hierarchical_prf sums these."""
    return np.array(
        [(len(ancestors(p) & ancestors(t)), len(ancestors(p)), len(ancestors(t))) for p, t in zip(predicted, truths)]
    )


def _hf1(counts: np.ndarray) -> np.ndarray | float:
    """Micro hF1 of per-product counts (products on the second-to-last axis)."""
    overlap, predicted, relevant = np.moveaxis(counts.sum(axis=-2), -1, 0)
    precision, recall = overlap / predicted, overlap / relevant
    return 2 * precision * recall / np.where(precision + recall > 0, precision + recall, 1)


def results(data: Data, rows: list[Row], resamples: int = 2000) -> pl.DataFrame:
    """Per row and part: hF1 and ratio to the reference on the same rows; a paired bootstrap 90% interval
    of the test ratio."""
    reference = next(r for r in rows if (r.approach, r.documents) == REFERENCE)
    test = np.flatnonzero(data.part(TEST))
    resample = np.random.default_rng(0).integers(0, test.size, (resamples, test.size))
    ref_counts = _counts(reference.predicted, data.truths)
    table = []
    for row in rows:
        counts = _counts(row.predicted, data.truths)
        figures = {"approach": row.approach, "documents": row.documents, "how": row.how}
        # every row, as the pipeline reports it today: zero-shot only (label transfer's parts differ)
        figures["all hF1"] = round(float(_hf1(counts)), 3) if row.how == ZERO_SHOT else None
        for part in (DEV, TEST):
            mask = data.part(part)
            figures[f"{part} hF1"] = round(float(_hf1(counts[mask])), 3)
            figures[f"{part} ratio"] = round(float(_hf1(counts[mask]) / _hf1(ref_counts[mask])), 3)
        ratios = _hf1(counts[test][resample]) / _hf1(ref_counts[test][resample])
        figures["test ratio 90%"] = f"{np.percentile(ratios, 5):.2f}-{np.percentile(ratios, 95):.2f}"
        table.append(figures)
    return pl.DataFrame(table)


def chosen_on_dev(table: pl.DataFrame) -> list[str]:
    """The dev-best zero-shot row and the dev-best row of all, with their test figures."""
    candidates = table.filter((pl.col("approach") != REFERENCE[0]) | (pl.col("documents") != REFERENCE[1]))
    lines = []
    for label, pool in (("best zero-shot", candidates.filter(pl.col("how") == ZERO_SHOT)), ("best of all", candidates)):
        best = pool.sort("dev hF1", descending=True, maintain_order=True).row(0, named=True)
        lines.append(
            f"chosen on dev, {label}: {best['approach']} [{best['documents']}] dev {best['dev hF1']} ({best['dev ratio']}x) "
            f"-> test {best['test hF1']} ({best['test ratio']}x the reference, 90% interval {best['test ratio 90%']})"
        )
    return lines


def labelled_rows(data: Data, built: Constructions, vectors: np.ndarray) -> tuple[list[Row], pl.DataFrame]:
    """Product-side evidence on the full-depth cascade: neighbour votes with the a-priori settings and
    with the settings chosen on dev, and category-centroid votes."""
    base = built.cascade([FULL_DEPTH], vectors)
    grid, best = settings_on_dev(data, base, vectors)
    setting = f"k={best['neighbours']}, T={best['temperature']}"
    rows = [
        Row("label-transfer", FULL_DEPTH, CV_DEV_POOL, transfer(data, base, vectors)),
        Row(f"label-transfer ({setting}: dev's best)", FULL_DEPTH, CV_DEV_POOL, transfer(data, base, vectors, **best)),
        Row("centroid-transfer", FULL_DEPTH, CV_DEV_POOL, centroid_transfer(data, base, vectors)),
    ]
    return rows, grid


def markdown_tables(**options) -> pl.Config:
    """Tables printed whole as Markdown, as docs/results/quality.md quotes them."""
    return pl.Config(tbl_rows=-1, tbl_cols=-1, tbl_formatting="MARKDOWN", tbl_hide_column_data_types=True,
                     tbl_hide_dataframe_shape=True, **{"fmt_str_lengths": 80, "tbl_width_chars": 250, **options})  # fmt: skip


def report(data: Data, encoder: Encoder, budgets: Sequence[int] = ENRICHED_BUDGETS) -> pl.DataFrame:
    """Every row for one model, printed with its choices on dev; returns the results table."""
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as index_dir:
        rows = pipeline_rows(data, LocalEvidence(encoder, data, Path(index_dir)))
    titles, descriptions = data.products["product_title"].to_list(), data.products["product_description"].to_list()
    queries = {
        "description": normalise(encoder(descriptions)),
        "title": normalise(encoder(title_and_description_queries(titles, descriptions))),
    }
    built = Constructions(encoder, data, budgets)
    rows += zero_shot_rows(data, built, queries)
    transferred, grid = labelled_rows(data, built, queries["title"])
    table = results(data, rows + transferred)
    with markdown_tables():
        print(f"{encoder.model_id}, strict hF1; {data.products.height} products: dev {int(data.dev.sum())}, "
              f"test {int((~data.dev).sum())} (dev fraction {DEV_FRACTION})\n")  # fmt: skip
        print(table, "\n", *chosen_on_dev(table), sep="\n")
        print("\nlabel transfer on the full-depth cascade, settings by cv in dev:", grid, sep="\n")
        print(f"\ncategory documents, tokens per document ({encoder.model_id}'s tokenizer, [CLS] and [SEP] included):")
        print(built.token_table())
    print(f"{encoder.model_id}: {time.perf_counter() - started:.0f}s\n", file=sys.stderr)
    return table


def side_by_side(tables: dict[str, pl.DataFrame]) -> pl.DataFrame:
    """Per approach and documents: each model's test hF1 with its ratio to that model's reference."""
    keys = ["approach", "documents", "how"]
    joined = None
    for model, table in tables.items():
        figure = pl.format("{} ({}x)", pl.col("test hF1"), pl.col("test ratio")).alias(f"{model.split('/')[-1]} test")
        # a row computed twice (the pipeline's approach and its construction) is shown once
        part = table.select(*keys, figure).unique(keys, keep="first", maintain_order=True)
        if joined is not None:
            part = joined.join(part, on=keys, how="full", coalesce=True, maintain_order="left")
        joined = part
    return joined


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=model_list, default=None, help="comma-separated catalogue ids")
    parser.add_argument("--products", type=Path, default=SHARED / "shopify-product-catalogue-sample" / "sample.jsonl")
    parser.add_argument("--taxonomy", type=Path, default=SHARED / "shopify-taxonomy" / "categories.txt")
    parser.add_argument("--cache", type=Path, default=ROOT / ".cache" / "quality", help="folder of .npz per model")
    parser.add_argument("--no-cache", action="store_true", help="encode everything again, keep nothing")
    # The enriched documents are long (up to 256 tokens): most of a cold run's encoding for a large model.
    parser.add_argument("--no-enriched", action="store_true", help="leave out the enriched-N documents")
    args = parser.parse_args(argv)
    data = load(args.products, args.taxonomy)
    cache, budgets = None if args.no_cache else args.cache, () if args.no_enriched else ENRICHED_BUDGETS
    tables = {m: report(data, Encoder(m, cache_file(cache, m)), budgets) for m in args.models or default_models()}
    if len(tables) > 1:
        with markdown_tables():
            print("test part, strict hF1 (x the reference on the same rows):", side_by_side(tables), sep="\n")


if __name__ == "__main__":
    main()
