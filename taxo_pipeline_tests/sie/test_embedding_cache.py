"""The warehouse embedding cache: SIE never encodes the same input twice for a model and its weights,
across restarts; changed weights are encoded again."""

import io
import shutil

import duckdb
import numpy as np
from PIL import Image

from taxo_pipeline import settings
from taxo_pipeline.sie.client import InferenceClient
from taxo_pipeline.sie.embedding_cache import EmbeddingCache, input_sha256
from taxo_pipeline.sie.model_catalogue import Catalogue, fingerprint, load_catalogue
from taxo_pipeline.warehouse.store import Warehouse
from taxo_pipeline_tests.sie.sie_testkit import MINILM, TINY_CLIP, write_catalogue

TEXTS = ["Straw hat", "Dome tent", "Coat rack", "Wool scarf", "Straw hat"]


def active_catalogue() -> Catalogue:
    return load_catalogue(settings.current().models)


def cached_client(url: str) -> InferenceClient:
    cache = EmbeddingCache(Warehouse(settings.current().warehouse), active_catalogue())
    return InferenceClient(url, settings.current().sie, batch_size=2, cache=cache)


def cache_connection():
    """The cache's own file beside the warehouse (the published warehouse has no embedding_cache)."""
    return Warehouse(settings.current().warehouse).cache.connect(read_only=True)


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

    with cache_connection() as con:
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
    with cache_connection() as con:
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
    assert EmbeddingCache(Warehouse(settings.current().warehouse), active_catalogue()).lookup(TINY_CLIP, True, [input_sha256(image)])


def cache_rows(model: str) -> list[tuple[str, int]]:
    with cache_connection() as con:
        return con.execute(
            "SELECT fingerprint, count(*) FROM embedding_cache WHERE model = ? GROUP BY ALL ORDER BY 1", [model]
        ).fetchall()


def test_changed_weights_are_encoded_again_and_their_old_vectors_deleted(
    sie_server, tiny_catalogue_entries, tmp_path, monkeypatch
):
    weights = tmp_path / "clip-weights"
    shutil.copytree(tiny_catalogue_entries[TINY_CLIP]["weights"]["path"], weights)
    entries = [tiny_catalogue_entries[MINILM], {**tiny_catalogue_entries[TINY_CLIP], "weights": {"path": str(weights)}}]
    monkeypatch.setenv("TAXO_MODELS", str(write_catalogue(tmp_path / "models.yaml", entries)))
    first = cached_client(sie_server)
    first.encode(TINY_CLIP, TEXTS[:4])
    first.encode(MINILM, TEXTS[:1])
    before = fingerprint(active_catalogue()[TINY_CLIP])

    with (weights / "config.json").open("a") as config:  # retrained weights, say
        config.write("\n")
    after = fingerprint(active_catalogue()[TINY_CLIP])
    assert after != before
    second = cached_client(sie_server)
    again = second.encode_detailed(TINY_CLIP, TEXTS[:4])
    assert not again.from_cache.any() and second.request_count == 2  # from SIE, in two batches of 2
    assert before not in dict(cache_rows(TINY_CLIP))
    assert cache_rows(TINY_CLIP) == [(after, 4)]  # the old vectors are gone
    assert cache_rows(MINILM) == [(fingerprint(active_catalogue()[MINILM]), 1)]  # another model keeps its own

    third = cached_client(sie_server)
    assert third.encode_detailed(TINY_CLIP, TEXTS[:4]).from_cache.all() and third.request_count == 0


OLD_SCHEMA = """
CREATE TABLE embedding_cache (
    model VARCHAR NOT NULL, is_query BOOLEAN NOT NULL, input_sha256 VARCHAR NOT NULL, dim INTEGER NOT NULL,
    vector FLOAT[] NOT NULL, request_id VARCHAR NOT NULL, batch_size INTEGER NOT NULL, latency_ms DOUBLE NOT NULL,
    PRIMARY KEY (model, is_query, input_sha256)
)"""


def test_a_cache_from_before_fingerprints_is_migrated_and_kept_only_for_models_outside_the_catalogue(
    sie_server, test_catalogue, monkeypatch
):
    monkeypatch.setenv("TAXO_MODELS", str(test_catalogue))
    settings.current().warehouse.parent.mkdir(parents=True)
    with duckdb.connect(str(settings.current().warehouse)) as con:
        con.execute(OLD_SCHEMA)
        for model in (MINILM, "remote/only-model"):
            con.execute(
                "INSERT INTO embedding_cache VALUES (?, false, ?, 2, [0.6, 0.8], 'old-request', 1, 5.0)",
                [model, input_sha256("Straw hat")],
            )
    cache = EmbeddingCache(Warehouse(settings.current().warehouse), active_catalogue())
    # A model only a remote server knows is keyed by its id alone: its old vector still counts.
    (vector, request) = cache.lookup("remote/only-model", False, [input_sha256("Straw hat")])[input_sha256("Straw hat")]
    np.testing.assert_allclose(vector, [0.6, 0.8])
    assert request.request_id == "old-request"
    # A catalogue model's vector of unknown weights is not used, and goes when the new one is stored.
    client = InferenceClient(sie_server, settings.current().sie, cache=cache)
    encoded = client.encode_detailed(MINILM, ["Straw hat"])
    assert not encoded.from_cache.any() and encoded.vectors.shape == (1, 384)
    assert cache_rows(MINILM) == [(cache.fingerprint(MINILM), 1)]
    assert cache_rows("remote/only-model") == [("", 1)]
