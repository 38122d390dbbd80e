"""What the classification service serves: one evaluated result (the leaderboard's best, or the approach,
model and variant named) loaded once (taxonomy, category vectors or index, labelled pool, calibration),
then classifying products with no warehouse, Chroma or embedding-cache access per request.

`Loader` keeps the current result and swaps in a new one, loaded beside it, when the warehouse says the
result was re-evaluated (its metrics or calibration rows were rewritten), the leaderboard's best changed,
or the reviewers' corrections did (a product sent with the id and text of a correction gets its reviewed
category, as in catalogue runs: classification/reviewer_labels.py)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

import polars as pl

from taxo_pipeline.approaches.spec import Approach, ClassifyRequest
from taxo_pipeline.classification.calibration import Calibration, features
from taxo_pipeline.classification.classifier import classify_request
from taxo_pipeline.classification.coverage import review_threshold
from taxo_pipeline.classification.evaluated import choose, load_calibration
from taxo_pipeline.classification.reviewer_labels import Reviews, reviewed_category, reviews
from taxo_pipeline.classification.run import classify_chunk
from taxo_pipeline.dataset.corrections import NONE, corrections_fingerprint
from taxo_pipeline.dataset.tables import load_corrections
from taxo_pipeline.dataset.taxonomy import split_path
from taxo_pipeline.evaluation.keys import ResultKey
from taxo_pipeline.evaluation.publication import settings_fingerprint
from taxo_pipeline.sie.client import InferenceClient
from taxo_pipeline.sie.embedding_cache import EmbeddingCache
from taxo_pipeline.sie.model_catalogue import load_catalogue
from taxo_pipeline.warehouse.publication import published_state
from taxo_pipeline.workspace import Workspace

log = logging.getLogger(__name__)
# The SIE client's per-batch progress lines would log every batch request.
quiet = logging.getLogger("taxo_pipeline.serving.sie")
quiet.setLevel(logging.WARNING)


@dataclass(frozen=True)
class Names:
    """The approach, model and variant the user named (None: the leaderboard's best), and the answer size."""

    approach: str | None = None
    model: str | None = None
    variant: str | None = None
    top_k: int = 5
    target_precision: float | None = None


@dataclass(frozen=True)
class Product:
    title: str = ""
    description: str = ""
    id: str | None = None


@dataclass(frozen=True)
class Classification:
    id: str | None
    top_k: list[tuple[str, float]]  # best first; empty when the approach skipped the product
    confidence: float | None  # calibrated probability that the top-1 is right
    needs_review: bool
    truncated: tuple[str, ...]  # the fields cut to TAXO_MAX_TEXT_CHARS
    skipped: str | None = None  # why the product got no category
    reviewed: str | None = None  # a reviewer's category for this product (id and text), which it answers

    @property
    def category(self) -> str | None:
        return self.reviewed or (self.top_k[0][0] if self.top_k else None)

    def levels(self) -> dict[str, str]:
        """The top category's path per level, as the `classifications` view's l1, l2, l3 columns."""
        parts = split_path(self.category) if self.category else []
        return {f"l{level}": " > ".join(parts[:level]) for level in range(1, len(parts) + 1)}


@dataclass(frozen=True)
class Fingerprint:
    """What identifies the stored result the service serves: a re-evaluation rewrites its rows' times."""

    key: ResultKey
    strict_f1: float
    computed_at: datetime | None  # its metrics rows
    fitted_at: datetime | None  # its calibration row
    corrections: str = NONE  # the corrections file's fingerprint (TAXO_CORRECTIONS)
    model_settings: str | None = None  # the model settings the result was computed with (None: not recorded)


def fingerprint(workspace: Workspace, names: Names) -> Fingerprint:
    """The result the warehouse's published results pick now (raises InputError, naming the fix, when there
    is none): a rerun half-way changes nothing here until it is whole (evaluation/publication.py)."""
    catalogue = load_catalogue(workspace.settings.models)
    choice = choose(workspace, [spec.id for spec in catalogue.enabled()], names.approach, names.model, names.variant)
    state = published_state(workspace.warehouse, choice.key)
    return Fingerprint(choice.key, choice.strict_f1, state.computed_at, state.fitted_at,
                       corrections_fingerprint(workspace.settings.corrections), state.model_fingerprint)  # fmt: skip


def settings_problem(workspace: Workspace, loader: Loader) -> str | None:
    """Why the served result cannot go with the model settings the SIE server runs now (None: it can). The
    local server follows the catalogue within seconds, so the catalogue's settings are the server's; a
    changed model serves no answers until its re-evaluation is complete and loaded."""
    served = loader.current
    if served is None or served.fingerprint.model_settings is None:
        return None
    key = served.key
    if settings_fingerprint(load_catalogue(workspace.settings.models), key.model, key.reranker) != served.fingerprint.model_settings:
        return (f"the SIE server runs other settings of {key.model} than the served result was computed "
                "with: waiting for its re-evaluation")  # fmt: skip
    return None


@dataclass
class Served:
    """One loaded result, ready to classify (thread-safe: requests share it from a thread pool)."""

    fingerprint: Fingerprint
    calibration: Calibration
    approach: Approach
    request: ClassifyRequest
    names: Names
    max_chars: int  # fields longer are cut (TAXO_MAX_TEXT_CHARS)
    review_below: float | None = None  # a product under this confidence needs review (None: no target)
    reviewed: Reviews = field(default_factory=dict)  # the corrections' labels by product id
    loaded_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def key(self) -> ResultKey:
        return self.fingerprint.key

    @property
    def review_threshold(self) -> float | None:
        """The threshold as a number for the answer; None without a target, or when none reaches it (all reviewed)."""
        return self.review_below if self.review_below not in (None, float("inf")) else None

    def classify(self, products: Sequence[Product]) -> list[Classification]:
        cut = [self._cut(p) for p in products]
        chunk = pl.DataFrame(
            {"product_id": [str(i) for i in range(len(products))], "product_title": [c[0] for c in cut],
             "product_description": [c[1] for c in cut]},
            schema={"product_id": pl.String, "product_title": pl.String, "product_description": pl.String},
        )  # fmt: skip
        classify = lambda frame: self.approach.classify(replace(self.request, products=frame))  # noqa: E731
        ranked, skipped = classify_chunk(chunk, classify, self.names.top_k)
        confidence = self.calibration.confidence(features(ranked))
        threshold = self.review_below
        answers = [
            Classification(product.id, candidates, float(conf) if candidates else None,
                           not candidates or (threshold is not None and conf < threshold), c[2], why)
            for product, candidates, conf, c, why in zip(products, ranked, confidence, cut, skipped, strict=True)
        ]  # fmt: skip
        return self._with_reviews(products, answers) if self.reviewed else answers

    def _with_reviews(self, products: Sequence[Product], answers: list[Classification]) -> list[Classification]:
        found = (reviewed_category(self.reviewed, p.id, p.title, p.description) for p in products)
        return [a if c is None else replace(a, reviewed=c, confidence=1.0, needs_review=False, skipped=None)
                for a, c in zip(answers, found, strict=True)]  # fmt: skip

    def _cut(self, product: Product) -> tuple[str, str, tuple[str, ...]]:
        fields = {"title": product.title, "description": product.description}
        cut = tuple(name for name, text in fields.items() if len(text) > self.max_chars)
        return product.title[: self.max_chars], product.description[: self.max_chars], cut

    def forget_requests(self) -> None:
        """Drop the per-request latency records the evidence and client keep, so a long-running service
        does not grow (appends from other threads meanwhile are safe: list operations hold the GIL)."""
        self.request.evidence.requests.clear()
        self.request.evidence.client.latencies.clear()

    def close(self) -> None:
        self.request.evidence.client.close()


LOADING = "loading the evaluated result"
WARM_UP = Product("Warm-up product", "Loads the category vectors, the labelled pool and the model.")


def load_served(workspace: Workspace, names: Names, sie_url: str, request_timeout_s: float | None = None) -> Served:
    """Load the result the warehouse picks now. Category vectors and the labelled pool's come from the
    warehouse's embedding cache through a loading client; requests then go through a client without
    the cache (no DuckDB connection per request) that keeps its connection to SIE open."""
    found, warehouse = fingerprint(workspace, names), workspace.warehouse
    reviewed = reviews(load_corrections(workspace))  # a bad file fails before any model loads
    calibration = load_calibration(warehouse, found.key)
    cache = EmbeddingCache(warehouse, load_catalogue(workspace.settings.models), read_only=True)
    loader = InferenceClient(sie_url, workspace.sie, cache=cache, logger=quiet)
    try:
        approach, request = classify_request(found.key, workspace, loader, names.top_k)
        target = names.target_precision
        # The held-out threshold that reaches the target (classify-products' rule); none reaches it: review all.
        below = None if target is None else review_threshold(warehouse, found.key, target)
        below = float("inf") if target and below is None else below
        served = Served(found, calibration, approach, request, names, workspace.settings.max_text_chars, below, reviewed)
        served.classify([WARM_UP])
        # a request's SIE calls wait no longer than its deadline, whatever the SDK retries (TAXO_SERVE_DEADLINE_S)
        request.evidence.client = InferenceClient(sie_url, workspace.sie, logger=quiet, timeout_s=request_timeout_s)
    finally:
        loader.close()
    served.classify([WARM_UP])  # the serving client's first request checks the server and opens the connection
    served.forget_requests()
    return served


class Loader:
    """Holds the current Served and reloads in the background: at start, and whenever the fingerprint
    (checked every `every_s` seconds) changes; a failed load keeps the previous result serving."""

    def __init__(self, load: Callable[[], Served], check: Callable[[], Fingerprint], every_s: float,
                 close_after_s: float = 60.0):  # fmt: skip
        """`close_after_s`: how long requests still on a replaced result may take (past their deadline)."""
        self._load, self._check, self.every_s, self.close_after_s = load, check, every_s, close_after_s
        self.current: Served | None = None
        self.problem: str | None = LOADING
        self.on_load: Callable[[Served], None] = lambda _: None  # told of each result swapped in
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="taxo-serve-loader", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def public_problem(self) -> str | None:
        """The problem as a client may read it: the log has the details (they name files)."""
        if self.problem in (None, LOADING):
            return self.problem
        return "the last load of the evaluated result failed; the service log says why"

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)  # a load in progress is not waited for: the thread is a daemon
        if self.current:
            self.current.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.step()
            except Exception as exc:  # a warehouse being written or a model failing to load: report, retry
                if str(exc) != self.problem:
                    log.warning(f"not reloading the classification result: {exc}")
                self.problem = str(exc)
                if self.current:
                    self.current.forget_requests()
            self._stop.wait(self.every_s)

    def step(self) -> None:
        current = self.current
        if current is not None and self._check() == current.fingerprint:
            current.forget_requests()
            return
        log.info("loading %s", "the evaluated result" if current is None else f"a re-evaluated result (was {current.key})")
        fresh = self._load()
        if self._check() != fresh.fingerprint:  # published again while loading: its parts may be of two results
            fresh.close()
            raise RuntimeError("the evaluated result changed while it was loading; loading it again")
        self.current = fresh  # one assignment: each request reads the old or the new one, whole
        self.problem = None
        self.on_load(fresh)
        log.info(f"serving {fresh.key} (strict hF1 {fresh.fingerprint.strict_f1:.3f}, calibrated on "
                 f"{fresh.calibration.products} products)")  # fmt: skip
        if current is not None:
            # Requests still on the old result finish within its client's timeout; a closed client only
            # refuses new requests, and none reach it now.
            closer = threading.Timer(max(60.0, self.close_after_s), current.close)
            closer.daemon = True
            closer.start()
