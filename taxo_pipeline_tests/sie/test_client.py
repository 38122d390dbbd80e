"""The client against one real local SIE server: real models, real vectors, real errors."""

import io
import logging
import socket
import threading
import time

import numpy as np
import pytest
from PIL import Image

from taxo_pipeline.errors import InputError
from taxo_pipeline.sie.client import InferenceClient, ModelNotServedError, SIEUnavailableError
from taxo_pipeline.sie.config import SIESettings
from taxo_pipeline.workspace import Workspace
from taxo_pipeline_tests.sie.sie_testkit import MINILM, TINY_CLIP, TINY_CROSS_ENCODER, TINY_NLI

HAT = "Handwoven straw Panama hat with a cotton ribbon."
CATEGORIES = [
    "Apparel & Accessories > Clothing Accessories > Hats",
    "Home & Garden > Decor > Coat & Hat Racks",
    "Sporting Goods > Outdoor Recreation > Camping & Hiking",
]
SECRET = "sk-test-DO-NOT-LEAK-4242"


def jpeg(color, size=48) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buffer, format="JPEG")
    return buffer.getvalue()


@pytest.fixture
def client(sie_server):
    with InferenceClient(sie_server, SIESettings(), batch_size=2) as client:
        yield client


def test_minilm_ranks_the_hat_category_first(client):
    query = client.encode(MINILM, [HAT], is_query=True)
    categories = client.encode(MINILM, CATEGORIES)
    assert query.shape == (1, 384) and categories.shape == (3, 384)
    assert query.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(categories, axis=1), 1.0, atol=1e-4)  # normalize: true
    similarity = categories @ query[0]
    assert CATEGORIES[int(np.argmax(similarity))] == CATEGORIES[0]
    assert similarity[0] - similarity[1] > 0.1 and similarity[1] > similarity[2]
    # batch_size=2: three categories take two requests, each one timed
    encodes = [r for r in client.latencies if r.operation == "encode"]
    assert [r.batch_size for r in encodes] == [1, 2, 1]
    assert all(r.model == MINILM and r.latency_ms > 0 for r in encodes)


def test_tiny_clip_encodes_images_and_text_into_one_16d_space(client):
    images = [jpeg((200, 30, 30)), jpeg((30, 30, 200))]
    image_vectors = client.encode(TINY_CLIP, images, is_query=True)
    text_vectors = client.encode(TINY_CLIP, CATEGORIES)
    assert image_vectors.shape == (2, 16) and text_vectors.shape == (3, 16)
    np.testing.assert_allclose(np.linalg.norm(image_vectors, axis=1), 1.0, atol=1e-4)
    assert not np.allclose(image_vectors[0], image_vectors[1])
    # same image, same vector
    np.testing.assert_allclose(client.encode(TINY_CLIP, images[:1]), image_vectors[:1], atol=1e-5)


def test_score_returns_one_score_per_candidate_in_candidate_order(client):
    scores = client.score(TINY_CROSS_ENCODER, HAT, CATEGORIES)
    assert scores.shape == (3,) and np.isfinite(scores).all()
    assert np.ptp(scores) > 1e-4  # the wide init makes candidates distinguishable
    # The server sorts by score; the client maps scores back to candidates, whatever their order.
    reversed_scores = client.score(TINY_CROSS_ENCODER, HAT, CATEGORIES[::-1])
    np.testing.assert_allclose(reversed_scores[::-1], scores, atol=np.ptp(scores) / 100)
    many = client.score_many(TINY_CROSS_ENCODER, [HAT, "tent"], [CATEGORIES, CATEGORIES[:1]])
    assert [s.shape for s in many] == [(3,), (1,)]
    np.testing.assert_allclose(many[0], scores, atol=np.ptp(scores) / 100)
    # batch_size=2 splits the three candidates into two requests
    assert [r.batch_size for r in client.latencies if r.operation == "score"][-3:] == [2, 1, 1]


def test_extract_returns_every_label_sorted_by_score(client):
    texts = [HAT, "A two-person dome tent.", "A ceramic coat hook."]
    results = client.extract(TINY_NLI, texts, labels=["Apparel & Accessories", "Home & Garden", "Sporting Goods"])
    assert len(results) == 3
    for classifications in results:
        assert sorted(c["label"] for c in classifications) == ["Apparel & Accessories", "Home & Garden", "Sporting Goods"]
        scores = [c["score"] for c in classifications]
        assert scores == sorted(scores, reverse=True)
        assert sum(scores) == pytest.approx(1.0, abs=1e-3)  # single-label: a softmax over the labels


def test_progress_is_logged_with_rate_and_eta(sie_server):
    lines = []

    class Recorder:
        def info(self, message):
            lines.append(message)

    client = InferenceClient(sie_server, SIESettings(), batch_size=2, progress_every=2, logger=Recorder())
    client.encode(MINILM, [f"product {i}" for i in range(9)])
    progress = [line for line in lines if "items/s" in line]
    assert [line.split(":")[1].split("items")[0].strip() for line in progress] == ["4/9", "8/9", "9/9"]
    assert all("ETA" in line and MINILM in line for line in progress)


def test_unknown_model_names_the_model_the_server_and_what_it_serves(client, sie_server):
    with pytest.raises(ModelNotServedError) as error:
        client.encode("nobody/no-such-model", ["x"])
    message = str(error.value)
    assert "'nobody/no-such-model' is not served by the SIE server at " + sie_server in message
    assert MINILM in message and TINY_NLI in message and "models.yaml" in message


def test_a_server_that_is_down_is_named_and_fails_fast():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"  # bound, not listening: refused
        started = time.monotonic()
        with pytest.raises(SIEUnavailableError) as error:
            InferenceClient(url, SIESettings()).encode(MINILM, ["x"])
    assert time.monotonic() - started < 5
    assert f"the SIE server at {url} is down or unreachable" in str(error.value)
    assert "Unset SIE_BASE_URL" in str(error.value)


def test_the_api_key_never_shows(sie_server, monkeypatch, caplog):
    monkeypatch.setenv("SIE_API_KEY", SECRET)
    caplog.set_level(logging.DEBUG)
    texts, sie = [], Workspace.from_env().sie
    for client in (InferenceClient(sie_server, sie, api_key=SECRET), InferenceClient(sie_server, sie)):
        texts.append(repr(client))
        with pytest.raises(ModelNotServedError) as error:
            client.encode("nobody/no-such-model", ["x"])
        texts.append(str(error.value))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        with pytest.raises(SIEUnavailableError) as error:
            InferenceClient(f"http://127.0.0.1:{sock.getsockname()[1]}", sie, api_key=SECRET).encode(MINILM, ["x"])
    texts.append(str(error.value))
    texts.append(caplog.text)
    assert "api_key=***" in texts[0]
    assert all(SECRET not in text for text in texts)


@pytest.fixture
def silent_server():
    """A real TCP server on loopback that accepts connections and never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        accepted, stop = [], threading.Event()

        def accept_forever():
            listener.settimeout(0.1)
            while not stop.is_set():
                try:
                    accepted.append(listener.accept()[0])
                except TimeoutError:
                    continue

        thread = threading.Thread(target=accept_forever, daemon=True)
        thread.start()
        yield listener.getsockname()[1], accepted
        stop.set()
        thread.join()
        for connection in accepted:
            connection.close()


def test_a_server_that_never_answers_fails_within_the_connect_timeout_naming_the_url(silent_server, monkeypatch):
    port, accepted = silent_server
    monkeypatch.setenv("TAXO_SIE_CONNECT_TIMEOUT_S", "1")
    client = InferenceClient(f"http://user:{SECRET}@127.0.0.1:{port}", Workspace.from_env().sie)
    started = time.monotonic()
    with pytest.raises(SIEUnavailableError) as error:
        client.encode(MINILM, ["x"])
    assert time.monotonic() - started < 10  # bounded by the 1 s setting, not the 300 s request timeout
    assert accepted  # it did connect
    message = str(error.value)
    assert message.startswith(f"the SIE server at http://***@127.0.0.1:{port} did not answer within 1s")
    assert "GET http://***@127.0.0.1:" in message and "TAXO_SIE_CONNECT_TIMEOUT_S" in message
    assert SECRET not in message


def test_timeouts_are_settings_checked_when_read(monkeypatch):
    monkeypatch.setenv("TAXO_SIE_TIMEOUT_S", "45")
    monkeypatch.setenv("TAXO_SIE_PROVISION_TIMEOUT_S", "120")
    sie = Workspace.from_env().sie
    client = InferenceClient("http://127.0.0.1:1", sie)
    assert (client.timeout_s, client.connect_timeout_s, client.provision_timeout_s) == (45, 10, 120)
    assert InferenceClient("http://127.0.0.1:1", sie, timeout_s=5).timeout_s == 5  # resource config wins
    monkeypatch.setenv("TAXO_SIE_TIMEOUT_S", "soon")
    with pytest.raises(InputError, match=r"TAXO_SIE_TIMEOUT_S='soon': expected a number of seconds greater than 0"):
        Workspace.from_env()  # as every front door builds it, before any client


def test_credentials_in_the_url_show_in_no_error_and_no_log_line(sie_server, caplog):
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="httpx")  # a command run earlier in this process quietened it
    with_userinfo = sie_server.replace("http://", f"http://user:{SECRET}@")
    with pytest.raises(ModelNotServedError) as not_served:
        InferenceClient(with_userinfo, SIESettings()).encode("nobody/no-such-model", ["x"])
    assert str(not_served.value).startswith(
        f"model 'nobody/no-such-model' is not served by the SIE server at {sie_server.replace('http://', 'http://***@')};"
    )
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        url = f"http://{SECRET}@127.0.0.1:{port}/sie?key={SECRET}&region=eu"
        with pytest.raises(SIEUnavailableError) as refused:
            InferenceClient(url, SIESettings()).encode(MINILM, ["x"])
    assert f"the SIE server at http://***@127.0.0.1:{port}/sie?key=***&region=*** is down" in str(refused.value)
    assert "HTTP Request: GET http://***@127.0.0.1:" in caplog.text  # httpx's own request lines
    assert all(SECRET not in text for text in (str(not_served.value), str(refused.value), caplog.text))
