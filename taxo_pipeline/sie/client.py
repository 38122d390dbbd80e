"""Calls to an SIE server: batched, cached, timed, with errors that say what to do.

The SDK sends one HTTP request per call, so long input lists are split here into batches;
progress goes to the logger passed in (Dagster's context.log works). SIE_API_KEY and credentials
inside the URL never appear in a message, a log line or a repr (`redaction.redact`).

Every wait is bounded (seconds, each an env var the caller's `SIESettings` carries):
TAXO_SIE_CONNECT_TIMEOUT_S for connecting and the first answer (a server that accepts connections but
never answers fails after it), TAXO_SIE_TIMEOUT_S for one request, TAXO_SIE_PROVISION_TIMEOUT_S for a
model that is still loading (or a remote cluster scaling up). A server on this machine that refuses
connections fails at once, naming the exit code and log of the local server when this process started it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx
import numpy as np
from sie_sdk import (
    Item,
    ModelLoadFailedError,
    ModelLoadingError,
    ProvisioningError,
    RequestError,
    ServerError,
    SIEClient,
    SIEConnectionError,
    SIEError,
)

from taxo_pipeline.sie.config import SIESettings
from taxo_pipeline.sie.embedding_cache import EmbeddingCache, input_sha256
from taxo_pipeline.sie.latency import LatencyRecord
from taxo_pipeline.sie.local_process import exit_report
from taxo_pipeline.sie.redaction import RedactingFilter, redact

DEFAULT_BATCH_SIZE = 64
UNLOADING_RETRY_S = 1.0
_LOOPBACK = {"127.0.0.1", "localhost", "::1"}
T = TypeVar("T")

# httpx logs every request's full URL, credentials included.
logging.getLogger("httpx").addFilter(RedactingFilter())


class SIEInferenceError(RuntimeError):
    """An SIE call failed; the message names the model and the server URL."""


class ModelNotServedError(SIEInferenceError):
    pass


class SIEUnavailableError(SIEInferenceError):
    pass


class CallAbandoned(SIEInferenceError):
    """The caller's deadline passed or it cancelled (a client of the service hung up): no more SIE requests."""


@dataclass(frozen=True)
class Budget:
    """A caller's limit on every SIE call it makes in this thread: a monotonic deadline, and an event that
    cancels the work (checked before each batch; a request in flight stops waiting at the deadline)."""

    deadline: float
    cancelled: threading.Event = field(default_factory=threading.Event)

    def remaining(self) -> float:
        return self.deadline - time.monotonic()


_BUDGET: ContextVar[Budget | None] = ContextVar("sie_budget", default=None)


@contextmanager
def budget(limit: Budget) -> Iterator[Budget]:
    """Every SIE call of this thread (context) inside the block keeps to `limit`."""
    token = _BUDGET.set(limit)
    try:
        yield limit
    finally:
        _BUDGET.reset(token)


@dataclass(frozen=True)
class Encoded:
    vectors: np.ndarray  # float32, n x dim, in input order
    from_cache: np.ndarray  # bool, n
    # The requests that produced these vectors, now or in an earlier run (from the cache), once each.
    requests: list[LatencyRecord]


class InferenceClient:
    """encode / score / extract against one SIE server.

    Inputs for encode are `str` (text) or `bytes` (an encoded image: JPEG, PNG, WebP ...).
    With a cache, encode only sends inputs the warehouse has not seen for that model (and weights).
    `base_url` may be a function that returns it (`server.lazy_sie`), called at the first request: a
    command whose every input is cached starts no server.
    Timeouts left None come from `sie` (TAXO_SIE_TIMEOUT_S, TAXO_SIE_CONNECT_TIMEOUT_S and
    TAXO_SIE_PROVISION_TIMEOUT_S), as does the key to scrub from messages (SIE_API_KEY).
    """

    def __init__(
        self,
        base_url: str | Callable[[], str],
        sie: SIESettings,
        *,
        api_key: str | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        timeout_s: float | None = None,
        connect_timeout_s: float | None = None,
        provision_timeout_s: float | None = None,
        cache: EmbeddingCache | None = None,
        logger: Any = None,
        progress_every: int = 10,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = batch_size
        self.timeout_s = timeout_s or sie.timeout_s
        self.connect_timeout_s = connect_timeout_s or sie.connect_timeout_s
        self.provision_timeout_s = provision_timeout_s or sie.provision_timeout_s
        self.cache = cache
        self.log = logger or logging.getLogger(__name__)
        self.progress_every = progress_every
        self.latencies: list[LatencyRecord] = []
        # The SDK picks SIE_API_KEY itself when base_url is SIE_BASE_URL's origin; remember it to scrub.
        self._api_key = api_key
        self._secret = api_key or sie.api_key
        self._reachable = False
        self._sdk: SIEClient | None = None
        self._resolve: Callable[[], str] | None = None
        self._binding = threading.Lock()
        self.base_url: str | None = None
        self.url = "(the SIE server, found at the first request)"  # the URL as every message shows it
        if callable(base_url):
            self._resolve = base_url  # called at the first request: say, lazy_sie() starting a server
        else:
            self._bind(base_url)

    def _bind(self, base_url: str) -> None:
        self.base_url = base_url.rstrip("/")
        self.url = redact(self.base_url, self._secret)
        # Nothing scales up behind a server on this machine: a refused connection means it is gone.
        self._wait_for_capacity = httpx.URL(self.base_url).host not in _LOOPBACK
        self._sdk = SIEClient(
            self.base_url, api_key=self._api_key, connect_timeout_s=self.connect_timeout_s,
            read_timeout_s=self.timeout_s,
        )  # fmt: skip

    def _bound(self) -> None:
        """The server's URL, once a request needs it."""
        with self._binding:
            if self._sdk is None:
                self._bind(self._resolve())

    def __repr__(self) -> str:
        key = "***" if self._secret else None
        return f"InferenceClient(base_url={self.url!r}, batch_size={self.batch_size}, api_key={key}, cache={self.cache!r})"

    def __enter__(self) -> InferenceClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._sdk is not None:
            self._sdk.close()

    @property
    def request_count(self) -> int:
        return len(self.latencies)

    def served_models(self) -> list[str]:
        """Model ids the server lists at /v1/models, within the connect timeout."""
        self._bound()
        probe = SIEClient(self.base_url, api_key=self._api_key, timeout_s=self.connect_timeout_s)
        try:
            return [m["name"] for m in probe.list_models()]
        except (SIEConnectionError, httpx.TransportError) as exc:  # the SDK lets a reset connection through
            raise self._unavailable(exc, self.connect_timeout_s, "TAXO_SIE_CONNECT_TIMEOUT_S") from None
        except SIEError as exc:
            raise SIEInferenceError(self._scrub(f"listing models on {self.url} failed: {exc}")) from None
        finally:
            probe.close()

    # -- encode -------------------------------------------------------------------------------

    def encode(
        self, model: str, inputs: Sequence[str | bytes], is_query: bool = False, batch_size: int | None = None
    ) -> np.ndarray:
        """Dense vectors (float32, n x dim) in input order."""
        return self.encode_detailed(model, inputs, is_query, batch_size).vectors

    def encode_detailed(
        self,
        model: str,
        inputs: Sequence[str | bytes],
        is_query: bool = False,
        batch_size: int | None = None,
        refresh: bool = False,
    ) -> Encoded:
        """Like encode(), with where each vector came from. `refresh` re-encodes every input
        through SIE and overwrites its cached vector."""
        hashes = [input_sha256(value) for value in inputs]
        cached = self.cache.lookup(model, is_query, hashes) if self.cache and not refresh else {}
        # Each distinct missing input is sent once, even if it repeats in `inputs`.
        missing: dict[str, str | bytes] = {}
        for digest, value in zip(hashes, inputs):
            if digest not in cached:
                missing.setdefault(digest, value)
        if cached:
            self.log.info(f"encode {model}: {len(inputs) - len(missing)}/{len(inputs)} inputs from the embedding cache")
        if missing:
            fresh, requests = self._encode_uncached(model, list(missing.values()), is_query, batch_size)
            if self.cache and (pruned := self.cache.store(model, is_query, list(missing), fresh, requests, refresh)):
                self.log.info(f"encode {model}: deleted {pruned} cached vectors of its earlier weights or config")
            cached.update(zip(missing, zip(fresh, requests)))
        if not inputs:
            return Encoded(np.zeros((0, 0), np.float32), np.zeros(0, bool), [])
        vectors = np.stack([cached[digest][0] for digest in hashes]).astype(np.float32, copy=False)
        requests = {cached[digest][1].request_id: cached[digest][1] for digest in hashes}
        return Encoded(vectors, np.array([digest not in missing for digest in hashes]), list(requests.values()))

    def _provision_s(self) -> float:
        """sie-sdk caps each attempt's connect and read timeouts by the provision budget: the caller's
        deadline becomes the SDK's own limit on the request in flight."""
        limit = _BUDGET.get()
        return self.provision_timeout_s if limit is None else max(0.001, min(self.provision_timeout_s, limit.remaining()))

    def _encode_uncached(
        self, model: str, inputs: list[str | bytes], is_query: bool, batch_size: int | None
    ) -> tuple[np.ndarray, list[LatencyRecord]]:
        """Vectors, and for each input the request that carried it."""

        def send(batch: list[str | bytes]) -> list[np.ndarray]:
            results = self._sdk.encode(
                model, [_item(value) for value in batch], is_query=is_query,
                provision_timeout_s=self._provision_s(), wait_for_capacity=self._wait_for_capacity,
            )
            return [np.asarray(r["dense"], dtype=np.float32) for r in results]

        # Shortest first, so each request holds inputs of similar length: the server pads a request
        # to its longest input, and on CPU padding is wasted compute.
        order = sorted(range(len(inputs)), key=lambda i: len(inputs[i]))
        made: list[LatencyRecord] = []  # this call's own requests, whatever other threads send meanwhile
        in_order = self._batched("encode", model, [inputs[i] for i in order], send, batch_size, records=made)
        size = batch_size or self.batch_size
        vectors, carried = [None] * len(inputs), [None] * len(inputs)
        for position, index in enumerate(order):
            vectors[index], carried[index] = in_order[position], made[position // size]
        return np.stack(vectors), carried

    # -- score --------------------------------------------------------------------------------

    def score(self, model: str, query: str, candidates: Sequence[str], batch_size: int | None = None) -> np.ndarray:
        """One relevance score per candidate (float32), in candidate order."""
        return self.score_many(model, [query], [candidates], batch_size)[0]

    def score_many(
        self,
        model: str,
        queries: Sequence[str],
        candidates: Sequence[Sequence[str]],
        batch_size: int | None = None,
    ) -> list[np.ndarray]:
        """score() for each query against its own candidates, with progress over all pairs."""
        if len(queries) != len(candidates):
            raise ValueError(f"{len(queries)} queries but {len(candidates)} candidate lists")
        size = batch_size or self.batch_size
        # One request per (query, chunk of its candidates); progress counts candidates.
        chunks = [
            (qi, start, list(cands[start : start + size]))
            for qi, cands in enumerate(candidates)
            for start in range(0, len(cands), size)
        ]
        out = [np.zeros(len(c), np.float32) for c in candidates]

        def send(batch: list[tuple[int, int, list[str]]]) -> list[None]:
            ((qi, start, texts),) = batch
            result = self._sdk.score(
                model, Item(text=queries[qi]),
                [Item(id=str(i), text=text) for i, text in enumerate(texts)],
                provision_timeout_s=self._provision_s(), wait_for_capacity=self._wait_for_capacity,
            )
            if len(result["scores"]) != len(texts):
                raise SIEInferenceError(
                    f"score with model {model!r} on {self.url} returned {len(result['scores'])} scores "
                    f"for {len(texts)} candidates"
                )
            # The server sorts scores by value; put them back in candidate order.
            for entry in result["scores"]:
                out[qi][start + int(entry["item_id"])] = entry["score"]
            return [None]

        self._batched("score", model, chunks, send, 1, weight=lambda chunk: len(chunk[2]))
        return out

    # -- extract ------------------------------------------------------------------------------

    def extract(
        self, model: str, texts: Sequence[str], labels: Sequence[str], batch_size: int | None = None
    ) -> list[list[dict[str, Any]]]:
        """Per text, its classifications `{label, score}` sorted by score, highest first."""

        def send(batch: list[str]) -> list[list[dict[str, Any]]]:
            results = self._sdk.extract(
                model, [Item(text=text) for text in batch], labels=list(labels),
                provision_timeout_s=self._provision_s(), wait_for_capacity=self._wait_for_capacity,
            )
            # Some servers return label order, so sort here.
            return [
                sorted(
                    ({"label": c["label"], "score": float(c["score"])} for c in r.get("classifications") or []),
                    key=lambda c: c["score"],
                    reverse=True,
                )
                for r in results
            ]

        return self._batched("extract", model, list(texts), send, batch_size)

    # -- plumbing -----------------------------------------------------------------------------

    def _batched(
        self,
        operation: str,
        model: str,
        items: list,
        send: Callable[[list], list[T]],
        batch_size: int | None,
        weight: Callable[[Any], int] = lambda _: 1,
        records: list[LatencyRecord] | None = None,
    ) -> list[T]:
        size = batch_size or self.batch_size
        batches = [items[i : i + size] for i in range(0, len(items), size)]
        if batches:
            self._bound()
            self._check_reachable()
        total = sum(weight(item) for item in items)
        done, results, started = 0, [], time.monotonic()
        for number, batch in enumerate(batches, 1):
            _keep_to_budget(f"{operation} with model {model!r}")
            t0 = time.perf_counter()
            results.extend(self._call(operation, model, lambda batch=batch: send(batch)))
            count = sum(weight(item) for item in batch)
            record = LatencyRecord(operation, model, count, (time.perf_counter() - t0) * 1000)
            self.latencies.append(record)
            if records is not None:
                records.append(record)
            done += count
            if number % self.progress_every == 0 or (number == len(batches) and len(batches) > 1):
                elapsed = time.monotonic() - started
                rate = done / elapsed if elapsed > 0 else float("inf")
                eta = (total - done) / rate if rate > 0 else 0.0
                self.log.info(
                    f"{operation} {model}: {done}/{total} items ({100 * done / total:.0f}%), "
                    f"{rate:.1f} items/s, ETA {eta:.0f}s"
                )
        return results

    def _check_reachable(self) -> None:
        # One short request first: a server that is gone or hangs fails within the connect timeout,
        # not after a request timeout sized for inference.
        if self._reachable:
            return
        try:
            self.served_models()
        except SIEUnavailableError:
            raise
        except SIEInferenceError:
            pass  # a gateway that does not list models still answers requests
        self._reachable = True

    def _call(self, operation: str, model: str, request: Callable[[], T]) -> T:
        try:
            return self._while_unloading(request)
        except (SIEConnectionError, httpx.TransportError) as exc:
            raise self._unavailable(exc, self.timeout_s, "TAXO_SIE_TIMEOUT_S") from None
        except RequestError as exc:
            if exc.code == "MODEL_NOT_FOUND" or exc.status_code == 404:
                raise self._not_served(model) from None
            raise SIEInferenceError(self._scrub(f"{operation} with model {model!r} on {self.url} was rejected: {exc}")) from None
        except ModelLoadFailedError as exc:
            raise SIEInferenceError(
                self._scrub(f"model {model!r} failed to load on the SIE server at {self.url}: {exc}")
            ) from None
        except (ModelLoadingError, ProvisioningError) as exc:
            raise SIEInferenceError(
                self._scrub(
                    f"model {model!r} was not ready on the SIE server at {self.url} after "
                    f"{self.provision_timeout_s:.0f}s ({exc}); raise TAXO_SIE_PROVISION_TIMEOUT_S if it is large "
                    "or its weights are still downloading"
                )
            ) from None
        except SIEError as exc:
            raise SIEInferenceError(
                self._scrub(f"{operation} with model {model!r} on {self.url} failed: {type(exc).__name__}: {exc}")
            ) from None

    def _while_unloading(self, request: Callable[[], T]) -> T:
        """request(), again while the model is being unloaded: a reload (its config changed) or an idle
        eviction answers 503 MODEL_NOT_LOADED for a moment, which the SDK does not retry."""
        deadline = time.monotonic() + self._provision_s()
        while True:
            try:
                return request()
            except ServerError as exc:
                if exc.status_code != 503 or exc.code != "MODEL_NOT_LOADED" or time.monotonic() > deadline:
                    raise
                _keep_to_budget("waiting for a model being reloaded")
                time.sleep(UNLOADING_RETRY_S)

    def _not_served(self, model: str) -> ModelNotServedError:
        try:
            served = ", ".join(self.served_models()) or "no models"
        except SIEInferenceError:
            served = "(could not list its models)"
        return ModelNotServedError(
            self._scrub(
                f"model {model!r} is not served by the SIE server at {self.url}; it serves: {served}. "
                "Enable the model in models.yaml (or the TAXO_MODELS catalogue) for the local server, "
                "or point SIE_BASE_URL at a server that serves it."
            )
        )

    def _unavailable(self, exc: Exception, waited_s: float, setting: str) -> SIEUnavailableError:
        if report := exit_report(self.base_url):
            return SIEUnavailableError(self._scrub(f"{report}\nRun the command again to start a new server."))
        if isinstance(exc, httpx.TimeoutException) or isinstance(exc.__cause__, httpx.TimeoutException):
            return SIEUnavailableError(
                self._scrub(
                    f"the SIE server at {self.url} did not answer within {waited_s:g}s ({exc}). "
                    f"Check that it is up and not overloaded (GET {self.url}/readyz); a large model on CPU "
                    f"may need a larger {setting}."
                )
            )
        return SIEUnavailableError(
            self._scrub(
                f"the SIE server at {self.url} is down or unreachable ({exc}). "
                "Unset SIE_BASE_URL to let taxo-pipeline start a local server, "
                "or start one (sie-server serve) and set SIE_BASE_URL to its URL."
            )
        )

    def _scrub(self, message: str) -> str:
        return redact(message, self._secret)


def _keep_to_budget(what: str) -> None:
    """Raise CallAbandoned, naming `what` was abandoned, once the caller's budget is spent or it cancelled."""
    if (limit := _BUDGET.get()) is None:
        return
    if limit.cancelled.is_set():
        raise CallAbandoned(f"{what}: cancelled by the caller")
    if limit.remaining() <= 0:
        raise CallAbandoned(f"{what}: the caller's deadline passed")


def _item(value: str | bytes) -> Item:
    if isinstance(value, bytes):
        # The SDK reads the image format (jpeg, png, webp ...) from the bytes' signature.
        return Item(images=[{"data": value}])
    return Item(text=value)
