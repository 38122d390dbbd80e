"""The HTTP face of the classification service (FastAPI): `POST /classify`, `GET /healthz`, `GET /readyz`,
OpenAPI docs at /docs. Classification runs in the thread pool, never on the event loop."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from taxo_pipeline.errors import InputError
from taxo_pipeline.serving.model import Classification, Loader, Product, Served
from taxo_pipeline.sie.client import SIEInferenceError


class ProductIn(BaseModel):
    """One product: a title, a description or both; `id` is echoed back."""

    model_config = ConfigDict(extra="forbid", strict=True)
    title: str = ""
    description: str = ""
    id: str | None = None

    @model_validator(mode="after")
    def _has_text(self) -> ProductIn:
        if not self.title.strip() and not self.description.strip():
            raise ValueError("title and description are both empty: give a title, a description or both")
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


def create_app(loader: Loader, max_batch: int) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        loader.start()
        yield
        loader.stop()

    app = FastAPI(title="taxo-pipeline classification service", lifespan=lifespan,
                  description="Classifies products into the taxonomy with the evaluated result the warehouse picks.")  # fmt: skip
    @app.get("/healthz")
    async def healthz() -> dict:
        """The process is up."""
        return {"status": "ok"}

    @app.get("/readyz", responses={503: {"description": "still loading, or the load failed"}})
    async def readyz() -> JSONResponse:
        """Index, labelled pool, calibration and model loaded (503 until then)."""
        served = loader.current
        if served is None:
            return JSONResponse({"ready": False, "reason": loader.problem}, status_code=503)
        return JSONResponse({"ready": True, "result": _result(served).model_dump(),
                             "loaded_at": served.loaded_at.isoformat(), "problem": loader.problem})  # fmt: skip

    @app.post("/classify", response_model=ClassifyOut, openapi_extra={"requestBody": _BODY},
              responses={400: {"description": "not JSON"}, 413: {"description": "batch over TAXO_SERVE_MAX_BATCH"},
                         422: {"description": "a field is missing, empty or of the wrong type (named)"},
                         503: {"description": "not ready, or the SIE server failed"}})  # fmt: skip
    async def classify(request: Request) -> ClassifyOut:
        """One product `{"title", "description", "id"}` or a batch `{"products": [...]}`."""
        try:
            body = await request.json()
        except ValueError:
            raise HTTPException(400, detail='the body is not JSON: send {"title": ..., "description": ...} '
                                            'or {"products": [...]}') from None  # fmt: skip
        products = parse_products(body, max_batch)
        served = loader.current
        if served is None:
            raise HTTPException(503, detail=f"not ready: {loader.problem}")
        try:
            classified = await run_in_threadpool(served.classify, products)
        except (SIEInferenceError, InputError, LookupError) as exc:
            raise HTTPException(503, detail=str(exc)) from None
        return ClassifyOut(result=_result(served), review_threshold=served.review_threshold,
                           max_text_chars=served.max_chars, products=[_out(c) for c in classified])  # fmt: skip

    # The schemas the request body names, which FastAPI does not list on its own for a raw Request.
    def openapi() -> dict:
        if app.openapi_schema is None:
            from fastapi.openapi.utils import get_openapi

            schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            for model in (ProductIn, BatchIn):
                defs = model.model_json_schema(ref_template="#/components/schemas/{model}")
                schema["components"]["schemas"].update(defs.pop("$defs", {}))
                schema["components"]["schemas"][model.__name__] = defs
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi
    return app
