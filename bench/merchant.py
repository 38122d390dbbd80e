"""Merchant catalogues (issue 29): how well does a shop's catalogue get classified when some of its products
already carry the merchant's category?

    uv run python bench/merchant.py [--cap 150] [--seeds 2] [--shares 0.3 0.1 0] [--target 0.9] [--raw]

Reads ../shared/data/shopify-merchant-exports/rows.jsonl (24 shops, merchant-labelled; labels at the
warehouse's depth, those that are not taxonomy nodes dropped). Each shop is capped at --cap products (a
seeded sample), so the furniture shop (68% of the rows) does not decide the pooled figures. For each seed
and labelled share s, a seeded random s of each shop keeps its labels and the rest is classified, side by
side by:
  (a) zero-shot: today's best, label transfer with the evaluation's pool, weight and calibration;
  (b) own labels only: the 5 nearest labelled products of the shop vote (softmax of cosine / 0.05), the
      top vote's share as the confidence, no threshold;
  (c) catalogue: what `classify-products` does (classification/catalogue_labels.py): the shop's labelled
      products join the pool, the vote weight and the calibration chosen on them by 5-fold cross-fitting.
Per shop and pooled (every hidden product once per seed): exact and L1 accuracy at the depth, the
coverage at a measured precision of --target (the most confident products, largest share whose precision
reaches it: an oracle cut, the ceiling of a threshold), ECE and the largest decile gap of the confidence
(10 equal-count bins), and what the method's own review threshold for --target delivers: the share it
accepts and their measured precision. A shop's figures use only that shop's labels: the shops were never
seen by the evaluation, so every figure is on unseen shops. Nothing here is tuned on the hidden products.

--raw also runs the four raw exports through the real command, `classify-products --products export.csv
--target-precision --output out.parquet`, with 70% of each export's categories blanked (seeded), and
scores `category` and `needs_review` of the blanked products against the merchant's own labels.

Needs an evaluated warehouse (the README's main job, offline variables set) and starts one local SIE server.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import logging
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import polars as pl

from taxo_pipeline.approaches.label_transfer import labelled_pool
from taxo_pipeline.approaches.title_description import query_vectors
from taxo_pipeline.classification.calibration import deciles, ece, features, max_gap
from taxo_pipeline.classification.catalogue_labels import CatalogueLabels, label_at_depth, learn_from_catalogue
from taxo_pipeline.classification.classifier import classify_request
from taxo_pipeline.classification.coverage import coverage_table, review_threshold
from taxo_pipeline.classification.evaluated import choose, load_calibration
from taxo_pipeline.dataset.tables import load_trimmed_taxonomy
from taxo_pipeline.defs.resources import WorkspaceResource
from taxo_pipeline.retrieval.neighbour_votes import neighbour_votes
from taxo_pipeline.sie.client import InferenceClient
from taxo_pipeline.sie.embedding_cache import EmbeddingCache
from taxo_pipeline.sie.model_catalogue import load_catalogue
from taxo_pipeline.sie.server import ensure_sie
from taxo_pipeline.workspace import Workspace

ROOT = Path(__file__).resolve().parent.parent
MERCHANT = ROOT.parent / "shared" / "data" / "shopify-merchant-exports"
METHODS = ("zero-shot", "own labels", "catalogue")
log = logging.getLogger("bench.merchant")


def seeded(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big")


def load_shops(path: Path, nodes: set[str], depth, cap: int, fields: Sequence[str] = ()) -> pl.DataFrame:
    """shop, product_id, product_title, product_description, truth: every shop capped at `cap` (seeded)."""
    rows = pl.read_ndjson(path).with_row_index("row")
    truth = [label_at_depth(c, nodes, depth) for c in rows["category"].to_list()]
    rows = rows.with_columns(pl.Series("truth", truth, pl.String)).filter(pl.col("truth").is_not_null())
    frames = []
    for shop, frame in rows.group_by("source_repo", maintain_order=True):
        if frame.height > cap:
            frame = frame.sample(cap, seed=seeded(shop[0]) % 2**31)
        frames.append(frame)
    return pl.concat(frames).select(
        pl.col("source_repo").alias("shop"),
        (pl.col("source_repo") + "#" + pl.col("row").cast(pl.String)).alias("product_id"),
        pl.col("title").fill_null("").alias("product_title"),
        pl.concat_str([*(pl.col(f).fill_null("") for f in fields), pl.col("description").fill_null("")],
                      separator=". ").str.strip_chars(". ").alias("product_description"),
        "truth",
    )


def hide(shop: pl.DataFrame, share: float, seed: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(labelled, hidden): a seeded random `share` of the shop keeps its labels."""
    order = np.random.default_rng(seeded(f"{shop['shop'][0]}/{seed}")).permutation(shop.height)
    keep = int(round(share * shop.height))
    return shop[order[:keep]], shop[order[keep:]]


@dataclass
class Scored:
    """Per hidden product: the prediction, its confidence, and whether the method's own threshold accepts it."""

    shop: list[str]
    predicted: list[str | None]
    truth: list[str]
    confidence: list[float]
    accepted: list[bool | None]  # None: the method has no threshold
    confirmed: list[bool]  # the confidence was calibrated on the shop's own labels

    def subset(self, rows: list[int]) -> Scored:
        return Scored(*([getattr(self, f)[i] for i in rows] for f in
                        ("shop", "predicted", "truth", "confidence", "accepted", "confirmed")))  # fmt: skip


def coverage_at(confidence: np.ndarray, right: np.ndarray, target: float) -> float:
    """The largest share of the most confident products (whole ties) whose measured precision reaches `target`."""
    if not len(right):
        return float("nan")
    table = coverage_table(confidence, np.repeat(right[:, None], 3, axis=1))
    return max((row["coverage"] for row in table if row["precision_exact"] >= target - 1e-12), default=0.0)


def figures(s: Scored, target: float) -> dict:
    right = np.array([p == t for p, t in zip(s.predicted, s.truth)], dtype=float)
    l1 = np.array([p is not None and p.split(" > ")[0] == t.split(" > ")[0] for p, t in zip(s.predicted, s.truth)])
    conf = np.array(s.confidence)
    bins = deciles(conf, right) if len(conf) else ()
    out = {"products": len(right), "exact": right.mean() if len(right) else np.nan, "l1": l1.mean() if len(l1) else np.nan,
           "cov@P": coverage_at(conf, right, target), "ece": ece(bins), "gap": max_gap(bins)}  # fmt: skip
    if any(a is not None for a in s.accepted):
        accepted = np.array([bool(a) for a in s.accepted])
        out["accepted"] = accepted.mean()
        out["precision"] = right[accepted].mean() if accepted.any() else np.nan
    return out


class Bench:
    def __init__(self, client: InferenceClient, target: float):
        workspace = Workspace.from_env()
        self.warehouse = workspace.warehouse
        enabled = [spec.id for spec in load_catalogue(workspace.settings.models).enabled()]
        key = choose(workspace, enabled, "label-transfer", None, None).key
        self.approach, self.request = classify_request(key, workspace, client, top_k=5)
        self.calibration = load_calibration(self.warehouse, key)
        self.threshold = review_threshold(self.warehouse, key, target)
        self.key, self.target = key, target
        self.paths = self.request.taxonomy.paths
        self.weights: list[float] = []

    def ranked(self, products: pl.DataFrame, voters=None) -> list:
        result = self.approach.classify(replace(self.request, products=products.select(
            "product_id", "product_title", "product_description"), voters=voters))  # fmt: skip
        return result.ranked

    def zero_shot(self, labelled: pl.DataFrame, hidden: pl.DataFrame) -> tuple[list, np.ndarray, list, bool]:
        """Today's label transfer, trusting the evaluation's threshold (what --trust-evaluation does)."""
        ranked = self.ranked(hidden)
        confidence = self.calibration.confidence(features(ranked))
        return ranked, confidence, self._accept(confidence, self.threshold), False

    def own_labels(self, labelled: pl.DataFrame, hidden: pl.DataFrame) -> tuple[list, np.ndarray, list, bool]:
        if labelled.height == 0:
            return [[] for _ in range(hidden.height)], np.zeros(hidden.height), [None] * hidden.height, False
        index = {p: i for i, p in enumerate(self.paths)}
        labels = np.array([index[t] for t in labelled["truth"].to_list()])
        ask = replace(self.request, products=labelled)
        votes = neighbour_votes(query_vectors(ask, hidden) @ query_vectors(ask, labelled).T, labels, len(self.paths),
                                neighbours=5).votes  # fmt: skip
        best = votes.argmax(axis=1)
        ranked = [[(self.paths[b], float(v[b]))] for b, v in zip(best, votes)]
        return ranked, votes.max(axis=1), [None] * hidden.height, False

    def catalogue(self, labelled: pl.DataFrame, hidden: pl.DataFrame) -> tuple[list, np.ndarray, list, bool]:
        """What classify-products does: without enough labels to confirm the calibration, nothing is accepted."""
        labels = CatalogueLabels(labelled.select("product_id", "product_title", "product_description",
                                                 pl.col("truth").alias("ground_truth_category")))  # fmt: skip
        voters, learned = learn_from_catalogue(self.request, labels)
        if learned:
            self.weights.append(learned.weights)
        ranked = self.ranked(hidden, voters)
        calibration = learned.calibration if learned else self.calibration
        confidence = calibration.confidence(features(ranked))
        if learned is None:
            return ranked, confidence, [False] * hidden.height, False
        return ranked, confidence, self._accept(confidence, learned.review_threshold(self.target)), True

    @staticmethod
    def _accept(confidence: np.ndarray, threshold: float | None) -> list[bool]:
        return [False] * len(confidence) if threshold is None else list(confidence >= threshold)


def run_shops(bench: Bench, shops: pl.DataFrame, shares: Sequence[float], seeds: int) -> dict:
    results: dict[tuple[float, str], Scored] = {}
    for share in shares:
        for method in METHODS:
            if method == "own labels" and share == 0:
                continue
            scored = Scored([], [], [], [], [], [])
            started = time.perf_counter()
            for seed in range(seeds):
                for (shop,), frame in shops.group_by("shop", maintain_order=True):
                    labelled, hidden = hide(frame, share, seed)
                    if not hidden.height:
                        continue
                    run = {"zero-shot": bench.zero_shot, "own labels": bench.own_labels, "catalogue": bench.catalogue}
                    ranked, confidence, accepted, confirmed = run[method](labelled, hidden)
                    scored.shop += [shop] * hidden.height
                    scored.predicted += [r[0][0] if r else None for r in ranked]
                    scored.truth += hidden["truth"].to_list()
                    scored.confidence += [float(c) for c in confidence]
                    scored.accepted += accepted
                    scored.confirmed += [confirmed] * hidden.height
            log.info("share %.0f%% %s: %d products in %.1fs", 100 * share, method, len(scored.truth),
                     time.perf_counter() - started)  # fmt: skip
            results[(share, method)] = scored
    return results


def print_tables(results: dict, target: float) -> None:
    columns = ("products", "exact", "l1", "cov@P", "ece", "gap", "accepted", "precision")
    print(f"\n## pooled: every hidden product of every shop (capped), once per seed; P = {target}")
    print("labelled  method        " + "  ".join(f"{c:>9}" for c in columns))
    for (share, method), scored in results.items():
        f = figures(scored, target)
        print(f"{share:>7.0%}   {method:<12}  " + "  ".join(_cell(f.get(c)) for c in columns))
        confirmed = [i for i, c in enumerate(scored.confirmed) if c]
        if confirmed and len(confirmed) < len(scored.confirmed):
            f = figures(scored.subset(confirmed), target)
            print(f"{'':>7}   {'- confirmed':<12}  " + "  ".join(_cell(f.get(c)) for c in columns))
    print("\n## per shop: exact accuracy (products), by labelled share and method")
    shops = list(dict.fromkeys(next(iter(results.values())).shop))
    keys = list(results)
    print(f"{'shop':<36}" + "".join(f"{f'{s:.0%} {m}':>20}" for s, m in keys))
    for shop in shops:
        cells = []
        for key in keys:
            s = results[key]
            rows = [i for i, x in enumerate(s.shop) if x == shop]
            right = np.mean([s.predicted[i] == s.truth[i] for i in rows]) if rows else float("nan")
            cells.append(f"{right:.2f} ({len(rows)})")
        print(f"{shop[:35]:<36}" + "".join(f"{c:>20}" for c in cells))


def _cell(value) -> str:
    if value is None:
        return f"{'-':>9}"
    return f"{value:>9d}" if isinstance(value, int) else f"{value:>9.3f}"


def run_raw(target: float, share_hidden: float = 0.7) -> None:
    """The four raw exports through the real command, 70% of their categories blanked."""
    from taxo_pipeline.cli.classify import classify_products

    print(f"\n## raw exports through `classify-products --target-precision {target}`, "
          f"{share_hidden:.0%} of the categories blanked")  # fmt: skip
    print(f"{'export':<20}{'products':>9}{'kept':>6}{'blanked':>9}{'exact':>8}{'accepted':>9}{'precision':>10}"
          "  (kept: merchant categories left, usable; blanked: scored against the merchant's)")  # fmt: skip
    workspace = Workspace.from_env()
    nodes, depth = set(load_trimmed_taxonomy(workspace).paths), workspace.depth
    logging.getLogger().handlers.clear()  # the command logs to the terminal itself
    for export in sorted((MERCHANT / "raw").glob("*.csv")):
        with tempfile.TemporaryDirectory() as tmp:
            blanked, truth = _blank(export, Path(tmp) / export.name, share_hidden, nodes, depth)
            out = Path(tmp) / "out.parquet"
            if classify_products(["--products", str(blanked), "--target-precision", str(target), "--output", str(out)]):
                print(f"{export.name}: classify-products failed")
                continue
            rows = pl.read_parquet(out, columns=["product_id", "category", "category_source", "needs_review"])
        scored = rows.filter(pl.col("product_id").is_in(list(truth)))
        right = np.array([truth[p] == c for p, c in scored.select("product_id", "category").iter_rows()])
        accepted = ~scored["needs_review"].fill_null(True).to_numpy()
        precision = right[accepted].mean() if accepted.any() else float("nan")
        kept = (rows["category_source"] == "merchant").sum()
        print(f"{export.name:<20}{rows.height:>9}{kept:>6}{len(truth):>9}{right.mean():>8.3f}"
              f"{accepted.mean():>9.3f}{precision:>10.3f}")  # fmt: skip


def _blank(export: Path, target: Path, share: float, nodes: set[str], depth) -> tuple[Path, dict[str, str]]:
    """A copy of the export with `share` of its usable categories blanked (seeded by handle); their labels."""
    truth = {}
    with export.open(newline="", encoding="utf-8") as src, target.open("w", newline="", encoding="utf-8") as dst:
        reader = csv.DictReader(src)
        writer = csv.DictWriter(dst, reader.fieldnames)
        writer.writeheader()
        for row in reader:
            label = label_at_depth(row.get("Product Category"), nodes, depth)
            if label and seeded(f"blank/{row['Handle']}") % 1000 < share * 1000:
                truth[row["Handle"]] = label
                row["Product Category"] = ""
            writer.writerow(row)
    return target, truth


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cap", type=int, default=150, help="products per shop at most (default 150)")
    parser.add_argument("--seeds", type=int, default=2, help="random label hidings per share (default 2)")
    parser.add_argument("--shares", type=float, nargs="*", default=[0.3, 0.1, 0.0],
                        help="labelled shares (none: only --raw)")
    parser.add_argument("--target", type=float, default=0.9, help="target precision (default 0.9)")
    parser.add_argument("--fields", nargs="*", default=["product_type", "vendor"], choices=["product_type", "vendor"],
                        help="export fields put before the description, as the Shopify export reader does (default both)")
    parser.add_argument("--raw", action="store_true", help="also run the raw exports through classify-products")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    workspace = Workspace.from_env()
    taxonomy = load_trimmed_taxonomy(workspace)
    shops = load_shops(MERCHANT / "rows.jsonl", set(taxonomy.paths), taxonomy.depth, args.cap, args.fields)
    print(f"{shops.height} products of {shops['shop'].n_unique()} shops (at most {args.cap} each), "
          f"depth {taxonomy.depth}")  # fmt: skip
    warehouse, catalogue = WorkspaceResource().warehouse(), load_catalogue(workspace.settings.models)
    if args.shares:
        with ensure_sie(workspace.sie, workspace.data_dir, catalogue, ["sentence-transformers/all-MiniLM-L6-v2"],
                        logger=log) as url:  # fmt: skip
            with InferenceClient(url, workspace.sie, cache=EmbeddingCache(warehouse, catalogue), logger=log) as client:
                bench = Bench(client, args.target)
                labelled_pool(bench.request, bench.request.labelled)
                results = run_shops(bench, shops, args.shares, args.seeds)
        print_tables(results, args.target)
        print("weights chosen (votes, prior, the evaluation's votes):", sorted(bench.weights))
    if args.raw:
        run_raw(args.target)
    return 0


if __name__ == "__main__":
    sys.exit(main())
