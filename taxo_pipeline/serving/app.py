"""The HTTP face of the classification service (FastAPI): `POST /classify`, `GET /healthz`, `GET /readyz`,
`GET /metrics` (Prometheus), OpenAPI docs at /docs. Classification runs in the thread pool, never on the
event loop.

Under load it refuses rather than queues: at most `max_in_flight` classify requests are worked on, the
next gets 503 with Retry-After at once; each has `deadline_s`, after which the client gets 504 and its
remaining SIE calls are dropped (sie/client.py's Budget; one in flight stops waiting at the deadline);
a client that hangs up cancels its work the same way. Input is checked before any work: JSON only, a
byte limit read as the body streams in, text that is valid Unicode with a letter or digit. Error
bodies name the field and the fix, never a file path; the details of a server-side failure go to the
log under the request's id."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib.metadata import version
from typing import Any

from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from starlette.requests import ClientDisconnect

from taxo_pipeline.errors import InputError
from taxo_pipeline.serving.backend import BackendMonitor
from taxo_pipeline.serving.model import Classification, Loader, Product, Served
from taxo_pipeline.serving.operations import REQUEST_ID, Metrics, Operations
from taxo_pipeline.sie.client import Budget, CallAbandoned, SIEInferenceError, budget

log = logging.getLogger(__name__)
VERSION = version("taxo-pipeline")


class ProductIn(BaseModel):
    """One product: a title, a description or both; `id` is echoed back."""

    model_config = ConfigDict(extra="forbid", strict=True)
    title: str = ""
    description: str = ""
    id: str | None = None

    @field_validator("title", "description", "id")
    @classmethod
    def _unicode(cls, value: str | None) -> str | None:
        # JSON may escape a lone surrogate (\ud800), which no model or file can take as text.
        if value is not None:
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise ValueError("holds a lone surrogate (an unpaired \\ud800-\\udfff escape): not valid Unicode text") from None
        return value

    @model_validator(mode="after")
    def _has_text(self) -> ProductIn:
        if not self.title.strip() and not self.description.strip():
            raise ValueError("title and description are both empty: give a title, a description or both")
        if not any(c.isalnum() for c in self.title + self.description):
            raise ValueError("title and description have no letter or digit: there is nothing to classify")
        return self


class BatchIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    products: list[ProductIn] = Field(min_length=1)


class Candidate(BaseModel):
    category: str
    score: float


class ProductOut(BaseModel):
    id: str | None
    category: str | None = Field(description="the top category; null when the approach could not classify it")
    levels: dict[str, str] = Field(description="the top category's path per level: l1, l2, l3 ...")
    top_k: list[Candidate]
    confidence: float | None = Field(description="calibrated probability that `category` is right")
    needs_review: bool = Field(description="confidence below the review threshold (or no category); never when reviewed")
    truncated: list[str] = Field(description="fields cut to max_text_chars before classifying")
    skipped: str | None = Field(description="why the product got no category")
    reviewed: bool = Field(description="`category` is a reviewer's: a correction (TAXO_CORRECTIONS) has this id and text")


class ResultOut(BaseModel):
    approach: str
    model: str
    variant: str
    reranker: str | None
    strict_f1: float


class ClassifyOut(BaseModel):
    result: ResultOut
    review_threshold: float | None
    max_text_chars: int
    products: list[ProductOut]


def _result(served: Served) -> ResultOut:
    key = served.key
    return ResultOut(approach=key.approach, model=key.model, variant=key.variant, reranker=key.reranker,
                     strict_f1=served.fingerprint.strict_f1)  # fmt: skip


def _out(c: Classification) -> ProductOut:
    return ProductOut(
        id=c.id, category=c.category, levels=c.levels(), top_k=[Candidate(category=k, score=s) for k, s in c.top_k],
        confidence=c.confidence, needs_review=c.needs_review, truncated=list(c.truncated), skipped=c.skipped,
        reviewed=c.reviewed is not None,
    )  # fmt: skip


def _classify_within(served: Served, products: Sequence[Product], limit: Budget) -> list[Classification]:
    with budget(limit):
        return served.classify(products)


def _field(loc: tuple) -> str:
    """products[2].title from pydantic's ("products", 2, "title"); `body` for the body as a whole."""
    text = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc).lstrip(".")
    return text or "body"


def _validated(model: type[BaseModel], body: Any) -> BaseModel:
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        errors = [{"field": _field(e["loc"]), "message": e["msg"]} for e in exc.errors()]
        raise HTTPException(422, detail=errors) from None


def parse_products(body: Any, max_batch: int) -> list[Product]:
    """One product, or {"products": [...]} of at most `max_batch`; HTTPException names what is wrong."""
    if isinstance(body, dict) and "products" in body:
        if isinstance(body["products"], list) and len(body["products"]) > max_batch:
            raise HTTPException(413, detail=f"products: {len(body['products'])} products in one request, the limit "
                                            f"is {max_batch} (TAXO_SERVE_MAX_BATCH): split the batch")  # fmt: skip
        items = _validated(BatchIn, body).products
    else:
        items = [_validated(ProductIn, body)]
    return [Product(p.title, p.description, p.id) for p in items]


_BODY = {"content": {"application/json": {"schema": {"oneOf": [
    {"$ref": "#/components/schemas/ProductIn"}, {"$ref": "#/components/schemas/BatchIn"}]}}}, "required": True}  # fmt: skip


@dataclass(frozen=True)
class Limits:
    max_batch: int  # products in one request
    max_in_flight: int = 4  # classify requests worked on at once
    deadline_s: float = 30.0  # a classify request's limit, from its arrival
    max_body_bytes: int = 16 * 1024 * 1024
    body_timeout_s: float = 10.0  # the body's time to arrive, before the request takes an in-flight slot


RETRY_AFTER = {"Retry-After": "1"}


def _refuse(status: int, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail, "request_id": REQUEST_ID.get()}, status_code=status, headers=headers)


async def _body(request: Request, limit: int) -> bytes:
    """The body, read no further than `limit` bytes (413 as soon as it is over, or at once from Content-Length)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, detail=f"the body is {int(declared)} bytes, the limit is {limit} "
                                        "(TAXO_SERVE_MAX_BODY_BYTES): send fewer or shorter products")  # fmt: skip
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPException(413, detail=f"the body is over the limit of {limit} bytes (TAXO_SERVE_MAX_BODY_BYTES): "
                                            "send fewer or shorter products")  # fmt: skip
        chunks.append(chunk)
    return b"".join(chunks)


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except UnicodeDecodeError:
        raise HTTPException(400, detail="the body is not UTF-8 text") from None
    except RecursionError:
        raise HTTPException(400, detail="the body's JSON is nested too deeply") from None
    except ValueError as exc:
        raise HTTPException(400, detail=f'the body is not JSON ({exc}): send {{"title": ..., "description": ...}} '
                                        'or {"products": [...]}') from None  # fmt: skip


async def _disconnected(receive: Callable[[], Awaitable[dict]]) -> None:
    """Returns when the client hangs up (after the body, uvicorn's receive() waits for exactly that)."""
    while (await receive())["type"] != "http.disconnect":
        pass


_CLASSIFY_RESPONSES = {
    400: {"description": "not JSON, not UTF-8, or nested too deeply"},
    408: {"description": "the body did not arrive within the deadline"},
    413: {"description": "body over TAXO_SERVE_MAX_BODY_BYTES, or batch over TAXO_SERVE_MAX_BATCH"},
    415: {"description": "not application/json"},
    422: {"description": "a field is missing, empty, of the wrong type, not valid Unicode, or has no letter or digit (named)"},
    503: {"description": "busy (TAXO_SERVE_MAX_IN_FLIGHT), not ready, or the SIE server failed; Retry-After says when to "
                         "try again"},
    504: {"description": "no answer within TAXO_SERVE_DEADLINE_S"},
}  # fmt: skip


class Service:
    """The state the routes share: the loaded result, the backend's health, the limits, the metrics and
    the count of classify requests in flight (touched on the event loop only)."""

    def __init__(self, loader: Loader, limits: Limits, backend: BackendMonitor | None):
        self.loader, self.limits, self.backend = loader, limits, backend
        self.metrics = Metrics()
        self.in_flight = 0

    def show(self, served: Served) -> None:
        self.metrics.served.clear()
        key = served.key
        self.metrics.served.labels(key.approach, key.model, key.variant, key.reranker or "").set(1)
        self.metrics.served_f1.set(served.fingerprint.strict_f1)

    def not_ready(self) -> str | None:
        """Why /classify cannot answer now (None: it can)."""
        if self.loader.current is None:
            return self.loader.public_problem()
        return self.backend.problem if self.backend is not None else None

    def _gauge_health(self) -> str | None:
        reason = self.not_ready()
        self.metrics.ready.set(reason is None)
        if self.backend is not None:
            self.metrics.sie_up.set(self.backend.sie_up)
        return reason

    @asynccontextmanager
    async def lifespan(self, _: FastAPI) -> AsyncIterator[None]:
        self.loader.on_load = self.show
        self.loader.start()
        if self.backend is not None:
            self.backend.start()
        yield
        if self.backend is not None:
            self.backend.stop()
        self.loader.stop()

    async def healthz(self) -> dict:
        """The process is up: its version and the result it serves (null while loading)."""
        served = self.loader.current
        return {"status": "ok", "version": VERSION, "result": _result(served).model_dump() if served else None}

    async def readyz(self) -> JSONResponse:
        """Ready to classify: result loaded, SIE server answering with the result's model settings (503 otherwise)."""
        served, reason = self.loader.current, self._gauge_health()
        if reason is not None:
            return JSONResponse({"ready": False, "reason": reason}, status_code=503)
        return JSONResponse({"ready": True, "result": _result(served).model_dump(),
                             "loaded_at": served.loaded_at.isoformat(), "problem": self.loader.public_problem()})  # fmt: skip

    async def prometheus(self) -> Response:
        self._gauge_health()
        return Response(generate_latest(self.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    def _refused(self, request: Request) -> JSONResponse | None:
        """The answer to a request refused before its body is read: not JSON, or not ready."""
        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media != "application/json":
            return _refuse(415, f"send the body as application/json, not {media or 'no content type'}")
        if (reason := self.not_ready()) is not None:
            self.metrics.refused.labels("not_ready").inc()
            return _refuse(503, f"not ready: {reason}", RETRY_AFTER)
        return None

    def _busy(self) -> JSONResponse | None:
        if self.in_flight >= self.limits.max_in_flight:
            self.metrics.refused.labels("busy").inc()
            return _refuse(503, f"busy: {self.limits.max_in_flight} requests in flight (TAXO_SERVE_MAX_IN_FLIGHT); "
                                "try again after Retry-After seconds", RETRY_AFTER)  # fmt: skip
        return None

    def _count(self, change: int) -> None:
        self.in_flight += change
        self.metrics.in_flight.set(self.in_flight)

    def _release(self, work: asyncio.Future) -> None:
        self._count(-1)
        if not work.cancelled():
            work.exception()  # an abandoned request's error is expected: not "never retrieved" in the log

    async def classify(self, request: Request) -> Response:
        """One product `{"title", "description", "id"}` or a batch `{"products": [...]}`."""
        deadline = time.monotonic() + self.limits.deadline_s
        if (refused := self._refused(request)) is not None:
            return refused
        try:
            # before a slot is taken: clients that upload slowly hold a connection, not the work's capacity
            products = await self._products(request)
        except ClientDisconnect:
            log.info(f"client hung up while sending its request id={REQUEST_ID.get()}")
            return Response(status_code=499)
        if (busy := self._busy()) is not None:
            return busy
        self._count(+1)
        served = self.loader.current
        limit = Budget(deadline)
        work = asyncio.ensure_future(run_in_threadpool(_classify_within, served, products, limit))
        work.add_done_callback(self._release)  # the count holds until the worker thread is done with SIE
        return await self._answer(request, work, limit, served, len(products))

    async def _products(self, request: Request) -> list[Product]:
        try:
            async with asyncio.timeout(self.limits.body_timeout_s):
                body = await _body(request, self.limits.max_body_bytes)
        except TimeoutError:
            raise HTTPException(408, detail=f"the body did not arrive within {self.limits.body_timeout_s:g}s "
                                            "(TAXO_SERVE_HEADER_TIMEOUT_S)") from None  # fmt: skip
        return parse_products(_json(body), self.limits.max_batch)

    def _late(self) -> JSONResponse:
        return _refuse(504, f"no answer within {self.limits.deadline_s:g}s (TAXO_SERVE_DEADLINE_S): send fewer "
                            "products per request, or try again")  # fmt: skip

    async def _answer(self, request: Request, work: asyncio.Future, limit: Budget, served: Served, count: int) -> Response:
        """The work's answer; 504 at the deadline, nothing for a client that hung up (both cancel the work)."""
        hangup = asyncio.ensure_future(_disconnected(request.receive))
        try:
            done, _ = await asyncio.wait({work, hangup}, timeout=max(0.0, limit.remaining()),
                                         return_when=asyncio.FIRST_COMPLETED)  # fmt: skip
        finally:
            hangup.cancel()
        if work not in done:
            limit.cancelled.set()
            if hangup not in done:
                return self._late()
            log.info(f"client hung up before the answer; its work was cancelled id={REQUEST_ID.get()}")
            return Response(status_code=499)  # nginx's "client closed request", for the access log and the metrics
        try:
            classified = work.result()
        except (SIEInferenceError, InputError, LookupError) as exc:
            if limit.remaining() <= 0 or isinstance(exc, CallAbandoned):
                return self._late()
            log.warning(f"classify failed id={REQUEST_ID.get()}: {exc}")
            return _refuse(503, "the SIE server failed to answer; the service log has the details under this "
                                "request id", RETRY_AFTER)  # fmt: skip
        self.metrics.products.inc(count)
        out = ClassifyOut(result=_result(served), review_threshold=served.review_threshold,
                          max_text_chars=served.max_chars, products=[_out(c) for c in classified])  # fmt: skip
        return JSONResponse(out.model_dump())


def create_app(loader: Loader, limits: Limits, backend: BackendMonitor | None = None) -> Operations:
    """The FastAPI app, wrapped in the request ids, access log and metrics (operations.py)."""
    service = Service(loader, limits, backend)
    app = FastAPI(title="taxo-pipeline classification service", lifespan=service.lifespan, version=VERSION,
                  description="Classifies products into the taxonomy with the evaluated result the warehouse picks.")  # fmt: skip

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, exc: HTTPException) -> JSONResponse:
        return _refuse(exc.status_code, exc.detail, exc.headers)

    app.get("/healthz")(service.healthz)
    app.get("/readyz", responses={503: {"description": "loading, the load failed, the SIE server is not answering, or "
                                                       "it runs other model settings than the result's"}})(service.readyz)  # fmt: skip
    app.get("/metrics", include_in_schema=False)(service.prometheus)
    app.post("/classify", response_model=ClassifyOut, openapi_extra={"requestBody": _BODY},
             responses=_CLASSIFY_RESPONSES)(service.classify)  # fmt: skip
    app.openapi = lambda: _openapi(app)
    return Operations(app, service.metrics)


def _openapi(app: FastAPI) -> dict:
    """The schema, with the models the request body names, which FastAPI does not list on its own for a raw Request."""
    if app.openapi_schema is None:
        from fastapi.openapi.utils import get_openapi

        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        for model in (ProductIn, BatchIn):
            defs = model.model_json_schema(ref_template="#/components/schemas/{model}")
            schema["components"]["schemas"].update(defs.pop("$defs", {}))
            schema["components"]["schemas"][model.__name__] = defs
        app.openapi_schema = schema
    return app.openapi_schema
