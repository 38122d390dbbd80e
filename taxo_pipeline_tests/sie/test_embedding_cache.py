"""The warehouse embedding cache: SIE never encodes the same input twice for a model, across restarts."""

import io

import duckdb
import numpy as np
from PIL import Image

from taxo_pipeline import settings
from taxo_pipeline.sie.client import InferenceClient
from taxo_pipeline.sie.embedding_cache import EmbeddingCache, input_sha256
from taxo_pipeline.warehouse import Warehouse
from taxo_pipeline_tests.sie.sie_testkit import MINILM, TINY_CLIP

TEXTS = ["Straw hat", "Dome tent", "Coat rack", "Wool scarf", "Straw hat"]


def cached_client(url: str) -> InferenceClient:
    return InferenceClient(url, batch_size=2, cache=EmbeddingCache(Warehouse(settings.warehouse_path())))


def test_second_encode_makes_no_request_even_after_a_restart(sie_server):
    first = cached_client(sie_server)
    vectors = first.encode_detailed(MINILM, TEXTS, is_query=True)
    assert vectors.vectors.shape == (5, 384)
    assert not vectors.from_cache.any()
    assert first.request_count == 2  # 4 distinct texts, batch_size 2: the repeated one is sent once
    np.testing.assert_array_equal(vectors.vectors[0], vectors.vectors[4])

    again = first.encode_detailed(MINILM, TEXTS, is_query=True)
    assert first.request_count == 2 and again.from_cache.all()
    np.testing.assert_array_equal(again.vectors, vectors.vectors)

    restarted = cached_client(sie_server)  # a new process would see the same DuckDB file
    from_cache = restarted.encode_detailed(MINILM, TEXTS, is_query=True)
    np.testing.assert_array_equal(from_cache.vectors, vectors.vectors)
    assert restarted.request_count == 0
    # The requests that produced the vectors come back with them, so latency figures survive.
    assert sorted(from_cache.requests, key=lambda r: r.request_id) == sorted(first.latencies, key=lambda r: r.request_id)
    assert [r.batch_size for r in first.latencies] == [2, 2]

    # A new input costs one request for itself only; documents are cached apart from queries.
    mixed = restarted.encode_detailed(MINILM, ["Straw hat", "Rain boots"], is_query=True)
    assert mixed.from_cache.tolist() == [True, False] and restarted.request_count == 1
    restarted.encode(MINILM, ["Straw hat"], is_query=False)
    assert restarted.request_count == 2

    with duckdb.connect(str(settings.warehouse_path()), read_only=True) as con:
        rows = con.execute(
            "SELECT is_query, count(*), min(dim), max(len(vector)) FROM embedding_cache WHERE model = ? GROUP BY ALL ORDER BY 1",
            [MINILM],
        ).fetchall()
        stored = con.execute(
            "SELECT vector FROM embedding_cache WHERE model = ? AND is_query AND input_sha256 = ?",
            [MINILM, input_sha256("Dome tent")],
        ).fetchone()[0]
    assert rows == [(False, 1, 384, 384), (True, 5, 384, 384)]

    refreshed = cached_client(sie_server).encode_detailed(MINILM, ["Dome tent"], is_query=True, refresh=True)
    assert not refreshed.from_cache.any()
    with duckdb.connect(str(settings.warehouse_path()), read_only=True) as con:
        (request_id,) = con.execute(
            "SELECT request_id FROM embedding_cache WHERE model = ? AND is_query AND input_sha256 = ?",
            [MINILM, input_sha256("Dome tent")],
        ).fetchone()
    assert request_id == refreshed.requests[0].request_id  # refresh overwrote the cached row
    np.testing.assert_allclose(stored, vectors.vectors[1], rtol=0, atol=0)


def test_images_are_cached_by_their_bytes(sie_server):
    buffer = io.BytesIO()
    Image.new("RGB", (40, 40), (10, 120, 40)).save(buffer, format="JPEG")
    image = buffer.getvalue()
    client = cached_client(sie_server)
    first = client.encode(TINY_CLIP, [image], is_query=True)
    assert first.shape == (1, 16) and client.request_count == 1
    np.testing.assert_array_equal(cached_client(sie_server).encode(TINY_CLIP, [image], is_query=True), first)
    assert EmbeddingCache(Warehouse(settings.warehouse_path())).lookup(TINY_CLIP, True, [input_sha256(image)])


def test_delete_model_forgets_only_that_model(sie_server):
    client = cached_client(sie_server)
    client.encode(MINILM, ["Straw hat"])
    client.encode(TINY_CLIP, ["Straw hat"])
    assert client.cache.delete_model(TINY_CLIP) == 1
    digest = [input_sha256("Straw hat")]
    assert client.cache.lookup(TINY_CLIP, False, digest) == {}
    assert list(client.cache.lookup(MINILM, False, digest)) == digest
