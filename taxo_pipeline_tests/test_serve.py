"""`taxo-pipeline serve` as a real process on loopback, on a workspace where title-description MiniLM full-depth
was evaluated on the small taxonomy (classify_testkit): its answers match `classify-products`, concurrent
clients get the same answers, each bad input gets its status naming the field, a rewritten calibration
and new corrections are picked up without a restart (a reviewed product answered with its reviewer's
category), and SIGTERM leaves no process behind (its own SIE server included).

Under fire: hostile input gets a 4xx naming the problem and no file path, never a 500; clients that
trickle headers are cut off; every answer carries a request id, in the access log and the metrics;
overload is refused at once with Retry-After and every request is answered within its deadline; a
stopped or killed SIE server makes the service not ready within 2 s, in-flight requests get 504 at the
deadline or are cancelled when their client hangs up, and the service recovers by itself; a second
serve on a used port starts nothing; a changed model is not served until its re-evaluation is whole."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import dagster as dg
import httpx
import polars as pl
import psutil
import pytest
import yaml

from taxo_pipeline.classification.calibration import features
from taxo_pipeline.classification.evaluated import load_calibration
from taxo_pipeline.classification.run import Choices, prepare_run
from taxo_pipeline.cli.classify import classify_products
from taxo_pipeline.cli.main import main
from taxo_pipeline.defs.resources import pipeline_resources
from taxo_pipeline.errors import InputError
from taxo_pipeline.evaluation.keys import ResultKey
from taxo_pipeline.evaluation.publication import publish_if_whole
from taxo_pipeline.sie.model_catalogue import load_catalogue
from taxo_pipeline.warehouse.calibrations import CALIBRATIONS
from taxo_pipeline.warehouse.store import Warehouse
from taxo_pipeline.workspace import Workspace
from taxo_pipeline_tests.classify_testkit import evaluated_workspace
from taxo_pipeline_tests.sie.sie_testkit import MINILM

MAX_BATCH, MAX_CHARS, MAX_BODY, HEADER_TIMEOUT_S = 8, 200, 64 * 1024, 1.5
LEASH = {"title": "Dog leash", "description": "A strong nylon leash for walking dogs, with a padded handle."}
SUITCASE = {"title": "Hard-shell suitcase", "description": "A carry-on suitcase with four spinner wheels."}
CAT_TREE = {"title": "Cat tree", "description": "A tall scratching post with platforms for cats."}
CORRECTIONS, CORRECTIONS_HEADER = "corrections.csv", "product_id,category,product_title,product_description\n"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(env: dict[str, str], *args: str, log: Path) -> tuple[subprocess.Popen, str]:
    """The service with its log (stderr) in `log`, read by the tests while it runs."""
    port = _free_port()
    command = [sys.executable, "-m", "taxo_pipeline.cli.main", "serve", "--port", str(port), *args]
    with log.open("w") as stderr:
        process = subprocess.Popen(command, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=stderr)
    process.log = log
    return process, f"http://127.0.0.1:{port}"


def _wait_ready(process: subprocess.Popen, url: str, timeout_s: float = 240) -> httpx.Response:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert process.poll() is None, f"serve exited {process.returncode}: {process.log.read_text()[-3000:]}"
        try:
            if (ready := httpx.get(f"{url}/readyz", timeout=5)).status_code == 200:
                return ready
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"serve at {url} not ready after {timeout_s}s")


def _in_group(pgid: int) -> list[psutil.Process]:
    found = []
    for p in psutil.process_iter():
        try:
            if os.getpgid(p.pid) == pgid:
                found.append(p)
        except (ProcessLookupError, psutil.Error):
            pass
    return found


def _stop(process: subprocess.Popen) -> tuple[int, list[psutil.Process]]:
    """SIGTERM the service; its exit code and every process it had started (or in its process group)
    still running after."""
    children = psutil.Process(process.pid).children(recursive=True)
    process.send_signal(signal.SIGTERM)
    code = process.wait(timeout=60)
    _, alive = psutil.wait_procs(children, timeout=30)
    return code, alive + _in_group(process.pid)


@pytest.fixture(scope="module")
def evaluated(sie_server, test_catalogue, tmp_path_factory):
    root = tmp_path_factory.mktemp("serve")
    return root, evaluated_workspace(root, sie_server, test_catalogue)


@pytest.fixture(scope="module")
def service(evaluated):
    """The service on the evaluated workspace, reusing the session's SIE server (SIE_BASE_URL)."""
    root, environment = evaluated
    (root / CORRECTIONS).write_text(CORRECTIONS_HEADER)  # none yet: test_a_reviewed_product... writes one
    env = {**os.environ, **environment, "TAXO_SERVE_MAX_BATCH": str(MAX_BATCH), "TAXO_MAX_TEXT_CHARS": str(MAX_CHARS),
           "TAXO_SERVE_RELOAD_S": "0.5", "TAXO_CORRECTIONS": str(root / CORRECTIONS),
           "TAXO_SERVE_MAX_IN_FLIGHT": "16", "TAXO_SERVE_MAX_BODY_BYTES": str(MAX_BODY),
           "TAXO_SERVE_HEADER_TIMEOUT_S": str(HEADER_TIMEOUT_S)}  # fmt: skip
    process, url = _start(env, log=root / "serve.log")
    try:
        _wait_ready(process, url)
        yield url, process
    finally:
        if process.poll() is None:
            _stop(process)


def _classify(url: str, body, **kwargs) -> httpx.Response:
    return httpx.post(f"{url}/classify", json=body, timeout=60, **kwargs)


def test_health_ready_and_a_product_as_classify_products_classifies_it(service, evaluated, monkeypatch, tmp_path):
    url, _ = service
    _, environment = evaluated
    health = httpx.get(f"{url}/healthz").json()
    assert (health["status"], health["version"], health["result"]["approach"]) == ("ok", "0.1.0", "title-description")
    ready = httpx.get(f"{url}/readyz").json()
    assert ready["ready"] and ready["result"]["approach"] == "title-description"
    assert (ready["result"]["model"], ready["result"]["variant"]) == (MINILM, "full-depth")
    answer = _classify(url, {**LEASH, "id": "leash"})
    assert answer.status_code == 200, answer.text
    (product,) = answer.json()["products"]
    assert product["id"] == "leash" and len(product["top_k"]) == 5 and product["truncated"] == []
    assert product["category"] == product["top_k"][0]["category"]
    assert product["category"].startswith("Animals & Pet Supplies > Pet Supplies > ")
    l1, l2, l3 = product["category"].split(" > ")[:3]
    assert product["levels"] == {"l1": l1, "l2": f"{l1} > {l2}", "l3": f"{l1} > {l2} > {l3}"}
    assert product["needs_review"] is False and answer.json()["review_threshold"] is None
    # the same text through classify-products: the same ranking, scores and calibrated confidence
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    catalogue, output = tmp_path / "one.csv", tmp_path / "out.jsonl"
    pl.DataFrame([{"product_id": "leash", "product_title": LEASH["title"], "product_description": LEASH["description"]}]).write_csv(catalogue)
    assert classify_products(["--products", str(catalogue), "--output", str(output)]) == 0
    (row,) = pl.read_ndjson(output).to_dicts()
    assert [c["category"] for c in row["top_k"]] == [c["category"] for c in product["top_k"]]
    assert [c["score"] for c in row["top_k"]] == pytest.approx([c["score"] for c in product["top_k"]], abs=1e-5)
    assert row["confidence"] == pytest.approx(product["confidence"], abs=1e-5)
    assert (row["l1"], row["l2"], row["l3"]) == (product["levels"]["l1"], product["levels"]["l2"], product["levels"]["l3"])


def test_a_batch_answers_each_product_in_order_as_alone(service):
    url, _ = service
    singles = [_classify(url, p).json()["products"][0] for p in (LEASH, SUITCASE, CAT_TREE)]
    batch = _classify(url, {"products": [{**LEASH, "id": "a"}, SUITCASE, {**CAT_TREE, "id": "c"}]}).json()["products"]
    assert [p["id"] for p in batch] == ["a", None, "c"]
    assert [p["category"] for p in batch] == [p["category"] for p in singles]
    assert [p["confidence"] for p in batch] == pytest.approx([p["confidence"] for p in singles], abs=1e-5)
    assert batch[1]["category"].startswith("Luggage & Bags > ")
    assert batch[2]["category"].startswith("Animals & Pet Supplies > Pet Supplies > Cat Supplies")


def test_sixteen_concurrent_clients_get_the_same_answers(service):
    url, _ = service
    bodies = [LEASH, SUITCASE, CAT_TREE, {"products": [LEASH, CAT_TREE]}] * 12  # 48 requests, 16 at a time
    expected = {json.dumps(b): [p["category"] for p in _classify(url, b).json()["products"]] for b in bodies[:4]}
    with httpx.Client(timeout=120) as client, ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda b: client.post(f"{url}/classify", json=b), bodies))
    assert [a.status_code for a in answers] == [200] * len(bodies)
    assert [[p["category"] for p in a.json()["products"]] for a in answers] == [expected[json.dumps(b)] for b in bodies]


@pytest.mark.parametrize(
    ("body", "status", "field", "message"),
    [
        ({"title": "", "description": "  "}, 422, "body", "title and description are both empty"),
        ({"title": 5, "description": "A hat"}, 422, "title", "valid string"),
        ({"products": [{"title": "Hat"}, {"description": ["x"]}]}, 422, "products[1].description", "valid string"),
        ({"products": [{"title": "Hat"}, {"title": " "}]}, 422, "products[1]", "both empty"),
        ({"products": []}, 422, "products", "at least 1 item"),
        ({"titel": "Hat"}, 422, "titel", "Extra inputs are not permitted"),
        ({"products": [{"title": "Hat"}] * (MAX_BATCH + 1)}, 413, None, f"9 products in one request, the limit is {MAX_BATCH}"),
    ],
)  # fmt: skip
def test_bad_input_gets_its_status_naming_the_field(service, body, status, field, message):
    url, _ = service
    answer = _classify(url, body)
    assert answer.status_code == status, answer.text
    detail = answer.json()["detail"]
    if field is None:
        assert message in detail and "TAXO_SERVE_MAX_BATCH" in detail
    else:
        assert any(d["field"] == field and message in d["message"] for d in detail), detail


def test_a_body_that_is_not_json_gets_400(service):
    url, _ = service
    answer = httpx.post(f"{url}/classify", content=b"title=hat", headers={"content-type": "application/json"})
    assert answer.status_code == 400 and "not JSON" in answer.json()["detail"]


def test_a_long_text_is_cut_and_said_so(service):
    url, _ = service
    long = {"title": LEASH["title"], "description": (LEASH["description"] + " ") * 10}
    assert len(long["description"]) > MAX_CHARS
    (product,) = _classify(url, long).json()["products"]
    assert product["truncated"] == ["description"]
    (cut,) = _classify(url, {**long, "description": long["description"][:MAX_CHARS]}).json()["products"]
    assert cut["truncated"] == [] and cut["top_k"] == product["top_k"]


def test_a_rewritten_calibration_is_served_without_a_restart(service, evaluated):
    url, process = service
    _, environment = evaluated
    warehouse = Warehouse(environment["TAXO_WAREHOUSE"])
    ready = httpx.get(f"{url}/readyz").json()
    result = ready["result"]
    with warehouse.connect(read_only=True) as con:
        dataset = con.execute(f"SELECT dataset FROM {CALIBRATIONS} WHERE approach = ?", [result["approach"]]).fetchone()[0]
    key = ResultKey(result["approach"], result["model"], result["variant"], result["reranker"], dataset)
    calibration = load_calibration(warehouse, key).to_dict()
    calibration["method"], calibration["params"] = "temperature", {"temperature": 0.05}  # a re-evaluation's new fit
    with warehouse.transaction() as con:  # written as the metrics asset writes it: a new fit, a new time
        con.execute(f"UPDATE {CALIBRATIONS} SET calibration = ?, fitted_at = now() WHERE approach = ? AND dataset = ?",
                    [json.dumps(calibration), key.approach, dataset])  # fmt: skip
    assert publish_if_whole(warehouse, load_catalogue(environment["TAXO_MODELS"]))  # as the metrics asset ends
    _reloaded(url, ready["loaded_at"])
    (product,) = _classify(url, LEASH).json()["products"]
    ranked = [[(c["category"], c["score"]) for c in product["top_k"]]]
    expected = load_calibration(warehouse, key).confidence(features(ranked))[0]
    assert load_calibration(warehouse, key).method == "temperature"
    assert product["confidence"] == pytest.approx(expected, abs=1e-6)
    assert process.poll() is None  # the same process


def _reloaded(url: str, loaded_at: str) -> None:
    deadline = time.monotonic() + 60
    while httpx.get(f"{url}/readyz").json()["loaded_at"] == loaded_at:
        assert time.monotonic() < deadline, "the service did not reload"
        time.sleep(0.2)


def test_a_reviewed_product_gets_its_reviewers_category_once_the_corrections_change(service, evaluated):
    url, _ = service
    root, _ = evaluated
    before = _classify(url, {"products": [{**LEASH, "id": "sku-1"}]}).json()["products"][0]
    loaded_at = httpx.get(f"{url}/readyz").json()["loaded_at"]
    wrong_on_purpose = "Luggage & Bags > Suitcases"  # so the answer can only come from the correction
    (root / CORRECTIONS).write_text(f'{CORRECTIONS_HEADER}sku-1,{wrong_on_purpose},{LEASH["title"]},"{LEASH["description"]}"\n')
    try:
        _reloaded(url, loaded_at)
        batch = [{**LEASH, "id": "sku-1"}, {**LEASH, "id": "sku-2"}, {**SUITCASE, "id": "sku-1"}]
        reviewed, other_id, other_text = _classify(url, {"products": batch}).json()["products"]
    finally:
        (root / CORRECTIONS).write_text(CORRECTIONS_HEADER)
    assert (reviewed["category"], reviewed["confidence"], reviewed["needs_review"], reviewed["reviewed"]) == (
        wrong_on_purpose, 1.0, False, True)  # fmt: skip
    assert reviewed["levels"] == {"l1": "Luggage & Bags", "l2": wrong_on_purpose}
    assert [c["category"] for c in reviewed["top_k"]] == [c["category"] for c in before["top_k"]]  # the model's own
    assert [c["score"] for c in reviewed["top_k"]] == pytest.approx([c["score"] for c in before["top_k"]], abs=1e-5)
    assert other_id["reviewed"] is False and other_id["category"] == before["category"]  # another id
    assert other_text["reviewed"] is False and other_text["category"] != wrong_on_purpose  # the id, other text


def test_an_unknown_approach_or_no_evaluation_fails_before_serving(workspace, sie_env, capsys):
    assert main(["serve", "--approach", "nope"]) == 1
    assert "taxo-pipeline serve: error: unknown approach 'nope': expected one of" in capsys.readouterr().err
    assert main(["serve"]) == 1
    assert "no evaluation in the warehouse" in capsys.readouterr().err


def test_sigterm_stops_the_service_and_its_own_sie_server(evaluated, tmp_path):
    """Without SIE_BASE_URL the service starts its own SIE server; SIGTERM stops both."""
    _, environment = evaluated
    env = {**os.environ, **{k: v for k, v in environment.items() if k != "SIE_BASE_URL"}}
    env.pop("SIE_BASE_URL", None)
    process, url = _start(env, log=tmp_path / "serve.log")
    try:
        _wait_ready(process, url)
        assert _classify(url, LEASH).json()["products"][0]["category"].startswith("Animals & Pet Supplies > ")
        sie = [p for p in psutil.Process(process.pid).children(recursive=True) if "sie" in " ".join(p.cmdline())]
        assert sie, "the service started no SIE server of its own"
        code, alive = _stop(process)
        assert code == 0 and alive == []
        assert not any(p.is_running() for p in sie)
    finally:
        if process.poll() is None:
            process.kill()


def _raw(url: str, request: bytes, read: bool = True) -> bytes:
    """`request` sent as it is on a new connection; the whole answer (until the service closes it)."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(request)
        chunks = []
        while read and (chunk := sock.recv(65536)):
            chunks.append(chunk)
    return b"".join(chunks)


def _post(body: bytes, content_type: str = "application/json", extra: str = "") -> bytes:
    return (f"POST /classify HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
            f"Connection: close\r\n{extra}\r\n").encode() + body  # fmt: skip


DEEP = 20_000  # beyond the JSON decoder's recursion limit, within the body limit
HOSTILE = {
    "a lone surrogate": (b'{"title": "hat \\ud800"}', "application/json", 422, "lone surrogate"),
    "JSON nested 20,000 deep": (b"[" * DEEP + b"]" * DEEP, "application/json", 400, "nested too deeply"),
    "JSON nested 100,000 deep": (b"[" * 100_000 + b"]" * 100_000, "application/json", 413, "TAXO_SERVE_MAX_BODY_BYTES"),
    "a text/plain body": (json.dumps(LEASH).encode(), "text/plain", 415, "application/json"),
    "a form": (b"title=hat", "application/x-www-form-urlencoded", 415, "application/json"),
    "a title of NUL characters": (json.dumps({"title": "\0" * 20}).encode(), "application/json", 422, "no letter or digit"),
    "punctuation only": (json.dumps({"title": "!!! ???", "description": "..."}).encode(), "application/json", 422,
                         "no letter or digit"),
    "bytes that are not UTF-8": (b'{"title": "caf\\xe9"}'.replace(b"\\xe9", bytes([0xE9])), "application/json", 400, "UTF-8"),
    "a body over the byte limit": (json.dumps({"title": "hat", "description": "x" * MAX_BODY}).encode(),
                                   "application/json", 413, "TAXO_SERVE_MAX_BODY_BYTES"),
}  # fmt: skip


@pytest.mark.parametrize("case", HOSTILE)
def test_hostile_input_gets_a_4xx_naming_the_problem_never_a_500(service, evaluated, case):
    url, _ = service
    root, _ = evaluated
    body, content_type, status, message = HOSTILE[case]
    answer = httpx.post(f"{url}/classify", content=body, headers={"content-type": content_type}, timeout=60)
    assert answer.status_code == status, answer.text
    assert message in answer.text and str(root) not in answer.text
    assert answer.headers["x-request-id"] == answer.json()["request_id"]


def test_a_200_mb_body_is_refused_from_its_length_before_it_is_read(service):
    url, _ = service
    head = _post(b"", extra="").replace(b"Content-Length: 0", b"Content-Length: 200000000")
    started = time.monotonic()
    answer = _raw(url, head + b'{"title": "hat", "description": "')  # 200 MB announced, a few bytes sent
    assert answer.startswith(b"HTTP/1.1 413 ") and b"TAXO_SERVE_MAX_BODY_BYTES" in answer
    assert time.monotonic() - started < 5
    # the same without a length (chunked): counted as it streams in, refused once over the limit
    chunks = (b"x" * 16384 for _ in range(64))  # 1 MiB
    streamed = httpx.post(f"{url}/classify", content=chunks, headers={"content-type": "application/json"})
    assert streamed.status_code == 413 and "over the limit" in streamed.json()["detail"]


def test_clients_that_trickle_their_headers_are_cut_off(service):
    url, _ = service
    host, port = url.removeprefix("http://").split(":")
    slow = [socket.create_connection((host, int(port)), timeout=30) for _ in range(50)]
    try:
        started = time.monotonic()
        for sock in slow:
            sock.sendall(b"POST /classify HTTP/1.1\r\nHost: x\r\n")
        closed = set()
        while len(closed) < len(slow) and time.monotonic() - started < HEADER_TIMEOUT_S + 10:
            for i, sock in enumerate(slow):
                if i in closed:
                    continue
                try:
                    sock.sendall(b"X-Slow: 1\r\n")  # a header line every 0.2 s: uvicorn's keep-alive timer alone never fires
                except OSError:
                    closed.add(i)
            assert _classify(url, LEASH).status_code == 200  # others are served meanwhile
            time.sleep(0.2)
        assert len(closed) == len(slow)
        assert time.monotonic() - started < HEADER_TIMEOUT_S + 10
    finally:
        for sock in slow:
            sock.close()


def test_a_hang_up_mid_body_is_one_log_line_and_slow_uploads_hold_no_slot(service):
    url, process = service
    host, port = url.removeprefix("http://").split(":")
    partial_body = _post(b'{"title": "hat"', extra="X-Request-ID: mid-body\r\n").replace(b"Length: 15", b"Length: 1000")
    _raw(url, partial_body, read=False)  # sends part of its body, then hangs up
    slow = [socket.create_connection((host, int(port)), timeout=30) for _ in range(20)]  # more than the 16 in flight
    try:
        for sock in slow:
            sock.sendall(partial_body.replace(b"mid-body", b"slow"))
        assert _classify(url, LEASH).status_code == 200  # their uploads hold connections, not work slots
        answers = [b"".join(iter(lambda sock=sock: sock.recv(65536), b"")) for sock in slow]  # until closed
    finally:
        for sock in slow:
            sock.close()
    assert all(a.startswith(b"HTTP/1.1 408 ") and b"TAXO_SERVE_HEADER_TIMEOUT_S" in a for a in answers), answers[:2]
    _until(lambda: "id=mid-body" in process.log.read_text(), 5.0)
    lines = [line for line in process.log.read_text().splitlines() if "id=mid-body" in line]
    assert len(lines) == 2 and "hung up while sending" in lines[0] and " 499 " in lines[1], lines
    assert "Traceback" not in process.log.read_text()


def test_request_ids_the_access_log_and_prometheus_metrics(service):
    url, process = service
    given = _classify(url, LEASH, headers={"X-Request-ID": "order-42.a"})
    assert given.headers["x-request-id"] == "order-42.a"
    made = _classify(url, LEASH, headers={"X-Request-ID": "not a sane id"})
    assert re.fullmatch(r"[0-9a-f]{32}", made.headers["x-request-id"])
    before = _metric(url, 'taxo_serve_requests_total{route="/classify",status="200"}')
    _classify(url, SUITCASE)
    assert _metric(url, 'taxo_serve_requests_total{route="/classify",status="200"}') == before + 1
    text = httpx.get(f"{url}/metrics").text
    assert f'taxo_serve_result{{approach="title-description",model="{MINILM}",reranker="",variant="full-depth"}} 1.0' in text
    assert _metric(url, "taxo_serve_ready") == 1.0 and _metric(url, "taxo_serve_in_flight") == 0.0
    assert 'taxo_serve_request_duration_seconds_bucket{le="0.5",route="/classify"}' in text
    lines = [line for line in process.log.read_text().splitlines() if "id=order-42.a" in line]
    assert len(lines) == 1 and re.search(r"POST /classify 200 [\d.]+ms id=order-42.a$", lines[0])
    assert "Dog leash" not in process.log.read_text()  # no bodies in the log


def _metric(url: str, name: str) -> float:
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_a_second_serve_on_a_used_port_fails_before_starting_anything(evaluated):
    _, environment = evaluated
    env = {**os.environ, **environment}
    env.pop("SIE_BASE_URL")  # it would start an SIE server of its own
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        started = time.monotonic()
        done = subprocess.run([sys.executable, "-m", "taxo_pipeline.cli.main", "serve", "--port", str(port)], env=env,
                              capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 1 and f"cannot listen on 127.0.0.1:{port}" in done.stderr
    assert "SIE server" not in done.stderr and time.monotonic() - started < 30


@pytest.fixture(scope="module")
def own_sie_service(evaluated):
    """A service with its own SIE server (to stop and kill), two requests in flight and a 3 s deadline."""
    root, environment = evaluated
    env = {**os.environ, **environment, "TAXO_SERVE_MAX_IN_FLIGHT": "2", "TAXO_SERVE_DEADLINE_S": str(DEADLINE_S),
           "TAXO_SERVE_MAX_BATCH": "32"}  # fmt: skip
    env.pop("SIE_BASE_URL")
    process, url = _start(env, log=root / "serve-own-sie.log")
    try:
        _wait_ready(process, url)
        (sie,) = [p for p in psutil.Process(process.pid).children(recursive=True) if "sie-server" in " ".join(p.cmdline())]
        yield url, process, sie
    finally:
        if process.poll() is None:
            _stop(process)


DEADLINE_S = 3.0
BATCH = {"products": [LEASH, SUITCASE, CAT_TREE, {"title": "Wool scarf", "description": "A warm knitted scarf."}] * 8}


def test_overload_is_refused_at_once_and_every_request_is_answered_within_its_deadline(own_sie_service):
    url, _, _ = own_sie_service

    def client(_: int) -> list[tuple[int, str | None, float]]:
        answers = []
        with httpx.Client(timeout=30) as http:
            for _ in range(4):
                started = time.monotonic()
                answer = http.post(f"{url}/classify", json=BATCH)
                answers.append((answer.status_code, answer.headers.get("retry-after"), time.monotonic() - started))
        return answers

    busy_before = _metric(url, 'taxo_serve_refused_total{reason="busy"}')
    with ThreadPoolExecutor(24) as pool:
        answers = [a for part in pool.map(client, range(24)) for a in part]
    statuses = [status for status, _, _ in answers]
    assert set(statuses) <= {200, 503, 504} and statuses.count(200) >= 4, statuses
    refused = [a for a in answers if a[0] == 503]
    assert refused and all(retry == "1" for _, retry, _ in refused)
    assert all(seconds < DEADLINE_S + 2 for _, _, seconds in answers)
    assert _metric(url, 'taxo_serve_refused_total{reason="busy"}') - busy_before == len(refused)
    assert _metric(url, "taxo_serve_in_flight") == 0.0


def _until(check, timeout_s: float) -> float:
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < timeout_s, f"not within {timeout_s}s"
        time.sleep(0.05)
    return time.monotonic() - started


def _ready(url: str) -> bool:
    return httpx.get(f"{url}/readyz", timeout=5).status_code == 200


def test_a_stopped_sie_server_means_504_at_the_deadline_then_not_ready_and_recovery(own_sie_service):
    url, process, sie = own_sie_service
    host, port = url.removeprefix("http://").split(":")
    sie.suspend()  # kill -STOP: connections are accepted, nothing answers
    try:
        with ThreadPoolExecutor(1) as pool:
            late = pool.submit(lambda: httpx.post(f"{url}/classify", json=LEASH, timeout=30))
            hung_up = socket.create_connection((host, int(port)))  # a client that gives up before the answer
            hung_up.sendall(_post(json.dumps(BATCH).encode(), extra="X-Request-ID: gives-up\r\n"))
            time.sleep(0.3)
            hung_up.close()
            assert _until(lambda: not _ready(url), 2.0) <= 2.0
            refused = httpx.post(f"{url}/classify", json=LEASH, timeout=30)
            assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
            assert "SIE server is not answering" in refused.json()["detail"] and str(process.log.parent) not in refused.text
            answer = late.result()
        assert answer.status_code == 504 and "TAXO_SERVE_DEADLINE_S" in answer.json()["detail"]
        assert answer.elapsed.total_seconds() < DEADLINE_S + 1
    finally:
        sie.resume()
    _until(lambda: _ready(url), 10.0)
    # the abandoned requests' SIE calls stop waiting at their deadline: they leave the in-flight count
    _until(lambda: _metric(url, "taxo_serve_in_flight") == 0.0, 5.0)
    log = process.log.read_text()
    assert _classify(url, LEASH).status_code == 200, log[-3000:]
    assert [line for line in log.splitlines() if "id=gives-up" in line and "hung up" in line] != []
    assert "Traceback" not in log


def test_a_killed_sie_server_means_not_ready_within_two_seconds_then_recovery_without_a_restart(own_sie_service):
    url, process, sie = own_sie_service
    sie.kill()
    assert _until(lambda: not _ready(url), 2.0) <= 2.0
    answer = httpx.post(f"{url}/classify", json=LEASH, timeout=30)
    assert answer.status_code == 503 and answer.elapsed.total_seconds() < DEADLINE_S
    assert str(process.log.parent) not in answer.text and ".log" not in answer.text
    _until(lambda: _ready(url), 180.0)  # the follower starts the SIE server again on its port
    assert _classify(url, LEASH).status_code == 200 and process.poll() is None
    assert _metric(url, "taxo_serve_sie_up") == 1.0


def test_a_changed_model_is_not_served_until_its_reevaluation_is_whole_and_loaded(sie_server, test_catalogue, tmp_path):
    """The model's catalogue entry changes (its fingerprint with it): the service stops answering at once
    (its result's category vectors belong to the old settings), answers nothing while the partition reruns,
    and serves the re-evaluated result once it is published, without a restart."""
    catalogue = tmp_path / "models.yaml"
    catalogue.write_text(test_catalogue.read_text())
    environment = evaluated_workspace(tmp_path, sie_server, catalogue)
    process, url = _start({**os.environ, **environment, "TAXO_SERVE_RELOAD_S": "0.5"}, log=tmp_path / "serve.log")
    try:
        before = _wait_ready(process, url).json()
        entries = yaml.safe_load(catalogue.read_text())
        for entry in entries["models"]:
            if entry["id"] == MINILM:
                entry["size"] = f"{entry['size']} (re-exported)"  # any field of the entry makes new settings
        catalogue.write_text(yaml.safe_dump(entries))
        _until(lambda: not _ready(url), 5.0)
        assert "other settings of " + MINILM in httpx.get(f"{url}/readyz").json()["reason"]
        with pytest.MonkeyPatch.context() as env:  # classify-products refuses the same pairing
            for name, value in environment.items():
                env.setenv(name, value)
            products = tmp_path / "one.csv"
            pl.DataFrame([{"product_id": "leash", "product_title": LEASH["title"], "product_description": LEASH["description"]}]).write_csv(products)
            with pytest.raises(InputError, match=f"the settings of {MINILM} .* changed after .* re-evaluation is not complete"):
                prepare_run(Workspace.from_env(), products, Choices())
        statuses, done = [], threading.Event()

        def poll() -> None:
            while not done.is_set():
                statuses.append(_classify(url, LEASH).status_code)
                time.sleep(0.05)

        with ThreadPoolExecutor(1) as pool:
            polling = pool.submit(poll)
            try:
                _rerun(environment)
            finally:
                done.set()
            polling.result()
        after = _wait_ready(process, url, timeout_s=60).json()
        assert after["loaded_at"] != before["loaded_at"] and after["result"]["model"] == MINILM
        assert statuses and set(statuses) == {503}  # nothing answered while the result and the settings disagreed
        assert _classify(url, LEASH).status_code == 200
    finally:
        if process.poll() is None:
            _stop(process)


def _rerun(environment: dict[str, str]) -> None:
    """What the automation runs for the changed model: its partition's predictions, then its metrics."""
    from taxo_pipeline.definitions import defs

    with pytest.MonkeyPatch.context() as env, dg.instance_for_test() as instance:
        for name, value in environment.items():
            env.setenv(name, value)
        instance.add_dynamic_partitions("encoder_model", [MINILM])
        run = dg.materialize(
            defs.assets, selection=["title_description_predictions", "title_description_metrics"], instance=instance,
            resources=pipeline_resources(), partition_key=dg.MultiPartitionKey({"model": MINILM, "variant": "full-depth"}),
        )  # fmt: skip
        assert run.success
