"""`taxo-pipeline serve` as a real process on loopback, on a workspace where title-description MiniLM full-depth
was evaluated on the small taxonomy (classify_testkit): its answers match `classify-products`, concurrent
clients get the same answers, each bad input gets its status naming the field, a rewritten calibration
and new corrections are picked up without a restart (a reviewed product answered with its reviewer's
category), and SIGTERM leaves no process behind (its own SIE server included)."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import polars as pl
import psutil
import pytest

from taxo_pipeline.classification.calibration import features
from taxo_pipeline.classification.evaluated import CALIBRATIONS, load_calibration
from taxo_pipeline.cli.classify import classify_products
from taxo_pipeline.cli.main import main
from taxo_pipeline.evaluation.keys import ResultKey
from taxo_pipeline.warehouse import Warehouse
from taxo_pipeline_tests.classify_testkit import evaluated_workspace
from taxo_pipeline_tests.sie.sie_testkit import MINILM

MAX_BATCH, MAX_CHARS = 8, 200
LEASH = {"title": "Dog leash", "description": "A strong nylon leash for walking dogs, with a padded handle."}
SUITCASE = {"title": "Hard-shell suitcase", "description": "A carry-on suitcase with four spinner wheels."}
CAT_TREE = {"title": "Cat tree", "description": "A tall scratching post with platforms for cats."}
CORRECTIONS, CORRECTIONS_HEADER = "corrections.csv", "product_id,category,product_title,product_description\n"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(env: dict[str, str], *args: str) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    command = [sys.executable, "-m", "taxo_pipeline.cli.main", "serve", "--port", str(port), *args]
    process = subprocess.Popen(command, env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)  # fmt: skip
    return process, f"http://127.0.0.1:{port}"


def _wait_ready(process: subprocess.Popen, url: str, timeout_s: float = 240) -> httpx.Response:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert process.poll() is None, f"serve exited {process.returncode}: {process.stderr.read()[-3000:]}"
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
           "TAXO_SERVE_RELOAD_S": "0.5", "TAXO_CORRECTIONS": str(root / CORRECTIONS)}  # fmt: skip
    process, url = _start(env)
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
    assert httpx.get(f"{url}/healthz").json() == {"status": "ok"}
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


def test_sigterm_stops_the_service_and_its_own_sie_server(evaluated):
    """Without SIE_BASE_URL the service starts its own SIE server; SIGTERM stops both."""
    _, environment = evaluated
    env = {**os.environ, **{k: v for k, v in environment.items() if k != "SIE_BASE_URL"}}
    env.pop("SIE_BASE_URL", None)
    process, url = _start(env)
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
