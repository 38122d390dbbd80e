"""Every setting taxo-pipeline reads from the environment, in one frozen object.

pydantic-settings reads the variables (`_Variables`, the only reader of the environment besides
`processes.child_environment`, which hands it whole to child processes); `current()` builds a `Settings`
from them each time it is called (0.4 ms; tests and the Dagster resources change variables between calls),
and every bad value is reported at once, naming the variable and what it expects, before any work starts.
The table in docs/configuration.md lists the same variables. Only the front doors (the CLI, the service's
start, the Dagster definitions and resources) call it: each wraps the settings in a `Workspace`
(workspace.py) once and hands that, or the part a callee needs (`sie`: `SIESettings`), down
(taxo_pipeline_tests/test_layout.py checks who calls it).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict

from taxo_pipeline.dataset.google_mapping import GOOGLE_CATEGORIES_URL, GOOGLE_MAPPING_URL
from taxo_pipeline.dataset.taxonomy import MAX_LEVEL, Depth, depth_suffix, parse_depth
from taxo_pipeline.errors import InputError
from taxo_pipeline.sie.config import SIESettings

PROJECT_ROOT = Path(__file__).resolve().parent.parent

PRODUCTS_URL = (
    "https://huggingface.co/datasets/Shopify/product-catalogue/resolve/main/data/"
    "train-00000-of-00015.parquet"
)
TAXONOMY_URL = "https://raw.githubusercontent.com/Shopify/product-taxonomy/main/dist/en/categories.txt"

# File names the reference evaluation uses under data/ (seed-rules.md).
RAW_PRODUCTS_FILE = "train-00000-of-00015.parquet"
RAW_TAXONOMY_FILE = "shopify-taxonomy-categories.txt"
CLEAN_FULL_DEPTH_FILE = "shopify-products-clean-full-depth.parquet"
TRIMMED_TAXONOMY_FILE = "shopify-taxonomy-l3.parquet"
# Not one of the reference's: every category at its full depth, for the full-depth category documents.
TAXONOMY_FULL_DEPTH_FILE = "shopify-taxonomy-full-depth.parquet"
EXPERIMENT_FILE = "shopify-products-experiment-l3.parquet"

EXECUTORS = ("multiprocess", "in_process")
# Four characters per token covers the longest window in models.yaml (8,192 tokens) for ordinary text.
DEFAULT_MAX_TEXT_CHARS = 32_768


# Set while Settings.from_env reads a mapping it was given (tests, child processes) instead of the environment.
_GIVEN: ContextVar[bool] = ContextVar("settings_given", default=False)


class _Variables(BaseSettings):
    """Every variable taxo-pipeline reads, as the text it is set to ("" when unset): pydantic-settings reads
    them, from the environment (or, for Settings.from_env(mapping), from that mapping alone); _Reader then
    checks each and names every bad one in one error."""

    model_config = SettingsConfigDict(case_sensitive=True, extra="ignore", frozen=True)

    DAGSTER_HOME: str = ""
    SIE_API_KEY: str = ""
    SIE_BASE_URL: str = ""
    TAXO_APPROACHES: str = ""
    TAXO_AUTOMATION_INTERVAL_S: str = ""
    TAXO_CATALOGUE: str = ""
    TAXO_CLASSIFY_CHUNK: str = ""
    TAXO_CORRECTIONS: str = ""
    TAXO_DATA_DIR: str = ""
    TAXO_DEPTH: str = ""
    TAXO_EXECUTOR: str = ""
    TAXO_GOOGLE_CATEGORIES: str = ""
    TAXO_GOOGLE_MAPPING: str = ""
    TAXO_INDEX_DIR: str = ""
    TAXO_LOCK_TIMEOUT_S: str = ""
    TAXO_MAX_TEXT_CHARS: str = ""
    TAXO_MODELS: str = ""
    TAXO_PRODUCTS: str = ""
    TAXO_SENSOR_INTERVAL_S: str = ""
    TAXO_SERVE_DEADLINE_S: str = ""
    TAXO_SERVE_HEADER_TIMEOUT_S: str = ""
    TAXO_SERVE_MAX_BATCH: str = ""
    TAXO_SERVE_MAX_BODY_BYTES: str = ""
    TAXO_SERVE_MAX_CONNECTIONS: str = ""
    TAXO_SERVE_MAX_IN_FLIGHT: str = ""
    TAXO_SERVE_RELOAD_S: str = ""
    TAXO_SHARD_SIZE: str = ""
    TAXO_SIE_CONNECT_TIMEOUT_S: str = ""
    TAXO_SIE_DEVICE: str = ""
    TAXO_SIE_PROVISION_TIMEOUT_S: str = ""
    TAXO_SIE_START_TIMEOUT_S: str = ""
    TAXO_SIE_STATE: str = ""
    TAXO_SIE_TIMEOUT_S: str = ""
    TAXO_SIE_WARM: str = ""
    TAXO_TAXONOMY: str = ""
    TAXO_TRAINING_PRODUCTS: str = ""
    TAXO_WAREHOUSE: str = ""

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings, dotenv_settings, file_secret_settings):
        return (init_settings,) if _GIVEN.get() else (env_settings,)

    @classmethod
    def read(cls, environ: Mapping[str, str] | None = None) -> dict[str, str]:
        if environ is None:
            return cls().model_dump()
        token = _GIVEN.set(True)
        try:
            return cls(**{name: str(value) for name, value in environ.items() if name in cls.model_fields}).model_dump()
        finally:
            _GIVEN.reset(token)


@dataclass(frozen=True)
class Settings:
    # Paths
    data_dir: Path  # TAXO_DATA_DIR: downloaded and derived files (./data)
    warehouse: Path  # TAXO_WAREHOUSE: the DuckDB warehouse (./warehouse/taxo.duckdb)
    index_dir: Path  # TAXO_INDEX_DIR: Chroma indexes (<data_dir>/chroma)
    dagster_home: Path  # DAGSTER_HOME: the instance the commands and `dev` share (./.dagster_home)
    # Sources
    products: str  # TAXO_PRODUCTS: labelled products, a path or URL (the Hugging Face shard)
    taxonomy: str  # TAXO_TAXONOMY: Shopify categories.txt, a path or URL (Shopify's main branch)
    products_given: bool  # whether TAXO_PRODUCTS was set (offline runs need both sources set)
    taxonomy_given: bool
    depth: Depth  # TAXO_DEPTH: 3 (the reference's), `full` (None) or N levels
    google_mapping: str  # TAXO_GOOGLE_MAPPING: Shopify's Shopify-to-Google mapping .txt, a path or URL (Shopify's main branch)
    google_categories: str  # TAXO_GOOGLE_CATEGORIES: the Google ids of that mapping, full_names.yml, a path or URL
    corrections: Path | None  # TAXO_CORRECTIONS: reviewed labels (label transfer learns from them, catalogue runs keep them)
    training_products: tuple[Path, ...]  # TAXO_TRAINING_PRODUCTS: labelled product files a fine-tuned encoder learns from
    # Models and approaches
    models: Path | None  # TAXO_MODELS: a model list other than the packaged models.yaml
    approaches: tuple[str, ...]  # TAXO_APPROACHES: modules that each define APPROACH
    max_text_chars: int  # TAXO_MAX_TEXT_CHARS: the longest text sent to a model
    sie: SIESettings
    # Runs, locks and catalogue shards
    executor: str  # TAXO_EXECUTOR: multiprocess (one process per step) or in_process
    lock_timeout_s: float  # TAXO_LOCK_TIMEOUT_S: how long a file lock is waited for
    catalogue: Path | None  # TAXO_CATALOGUE: the product catalogue the shard sensor classifies
    sensor_interval_s: int  # TAXO_SENSOR_INTERVAL_S: the model and catalogue sensors' tick (60 s)
    automation_interval_s: int  # TAXO_AUTOMATION_INTERVAL_S: the automation sensor's tick (30 s)
    serve_max_batch: int  # TAXO_SERVE_MAX_BATCH: most products in one POST /classify (256); more get 413
    serve_reload_s: float  # TAXO_SERVE_RELOAD_S: how often `serve` looks for a re-evaluated result (5 s)
    serve_max_in_flight: int  # TAXO_SERVE_MAX_IN_FLIGHT: classify requests worked on at once (4); more get 503
    serve_deadline_s: float  # TAXO_SERVE_DEADLINE_S: a classify request's limit (30 s), then 504, its SIE work dropped
    serve_max_body_bytes: int  # TAXO_SERVE_MAX_BODY_BYTES: the largest request body (16 MiB); more get 413
    serve_header_timeout_s: float  # TAXO_SERVE_HEADER_TIMEOUT_S: a request's time to send its headers, then its body (10 s)
    serve_max_connections: int  # TAXO_SERVE_MAX_CONNECTIONS: open connections uvicorn accepts (1024); more get 503
    shard_size: int  # TAXO_SHARD_SIZE: products per catalogue shard
    classify_chunk: int  # TAXO_CLASSIFY_CHUNK: products per classification batch

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = _Reader(_Variables.read(environ))
        data_dir = env.path("TAXO_DATA_DIR", PROJECT_ROOT / "data")
        built = cls(
            data_dir=data_dir,
            warehouse=env.path("TAXO_WAREHOUSE", PROJECT_ROOT / "warehouse" / "taxo.duckdb"),
            index_dir=env.path("TAXO_INDEX_DIR", data_dir / "chroma"),
            dagster_home=env.path("DAGSTER_HOME", PROJECT_ROOT / ".dagster_home"),
            products=env.text("TAXO_PRODUCTS") or PRODUCTS_URL,
            taxonomy=env.text("TAXO_TAXONOMY") or TAXONOMY_URL,
            products_given=bool(env.text("TAXO_PRODUCTS")),
            taxonomy_given=bool(env.text("TAXO_TAXONOMY")),
            depth=env.depth(),
            google_mapping=env.text("TAXO_GOOGLE_MAPPING") or GOOGLE_MAPPING_URL,
            google_categories=env.text("TAXO_GOOGLE_CATEGORIES") or GOOGLE_CATEGORIES_URL,
            corrections=env.path("TAXO_CORRECTIONS", None),
            training_products=env.paths("TAXO_TRAINING_PRODUCTS"),
            models=env.path("TAXO_MODELS", None),
            approaches=tuple(filter(None, (m.strip() for m in env.text("TAXO_APPROACHES").split(",")))),
            max_text_chars=env.whole("TAXO_MAX_TEXT_CHARS", DEFAULT_MAX_TEXT_CHARS),
            sie=SIESettings(
                base_url=env.text("SIE_BASE_URL").rstrip("/") or None,
                api_key=env.text("SIE_API_KEY") or None,
                device=env.text("TAXO_SIE_DEVICE") or "cpu",
                start_timeout_s=env.seconds("TAXO_SIE_START_TIMEOUT_S", SIESettings.start_timeout_s),
                timeout_s=env.seconds("TAXO_SIE_TIMEOUT_S", SIESettings.timeout_s),
                connect_timeout_s=env.seconds("TAXO_SIE_CONNECT_TIMEOUT_S", SIESettings.connect_timeout_s),
                provision_timeout_s=env.seconds("TAXO_SIE_PROVISION_TIMEOUT_S", SIESettings.provision_timeout_s),
                state_file=env.path("TAXO_SIE_STATE", data_dir / "sie-server.json"),
                warm=env.flag("TAXO_SIE_WARM", "1 (use the server `taxo-pipeline dev` runs) or 0"),
            ),
            executor=env.choice("TAXO_EXECUTOR", EXECUTORS),
            lock_timeout_s=env.seconds("TAXO_LOCK_TIMEOUT_S", 300.0),
            catalogue=env.path("TAXO_CATALOGUE", None, resolve=False),
            sensor_interval_s=env.whole("TAXO_SENSOR_INTERVAL_S", 60),
            automation_interval_s=env.whole("TAXO_AUTOMATION_INTERVAL_S", 30),
            serve_max_batch=env.whole("TAXO_SERVE_MAX_BATCH", 256),
            serve_reload_s=env.seconds("TAXO_SERVE_RELOAD_S", 5.0),
            serve_max_in_flight=env.whole("TAXO_SERVE_MAX_IN_FLIGHT", 4),
            serve_deadline_s=env.seconds("TAXO_SERVE_DEADLINE_S", 30.0),
            serve_max_body_bytes=env.whole("TAXO_SERVE_MAX_BODY_BYTES", 16 * 1024 * 1024),
            serve_header_timeout_s=env.seconds("TAXO_SERVE_HEADER_TIMEOUT_S", 10.0),
            serve_max_connections=env.whole("TAXO_SERVE_MAX_CONNECTIONS", 1024),
            shard_size=env.whole("TAXO_SHARD_SIZE", 10_000),
            classify_chunk=env.whole("TAXO_CLASSIFY_CHUNK", 2_048),
        )
        env.raise_problems()
        return built

    def taxonomy_file(self) -> str:
        return taxonomy_file(self.depth)

    def experiment_file(self) -> str:
        return experiment_file(self.depth)


def current() -> Settings:
    """The settings as the environment says now."""
    return Settings.from_env()


def given(variables: Iterable[str]) -> set[str]:
    """Which of `variables` are set (not empty) in the environment."""
    values = _Variables.read()
    return {var for var in variables if (values.get(var) or "").strip()}


class _Reader:
    """Reads variables, collecting every problem so one error names them all."""

    def __init__(self, environ: Mapping[str, str]):
        self.environ = environ
        self.problems: list[str] = []

    def text(self, var: str) -> str:
        return (self.environ.get(var) or "").strip()

    def paths(self, var: str) -> tuple[Path, ...]:
        """A comma-separated list of paths (none when unset)."""
        return tuple(Path(p.strip()).expanduser().resolve() for p in self.text(var).split(",") if p.strip())

    def path(self, var: str, default: Path | None, resolve: bool = True) -> Path | None:
        value = self.text(var)
        if not value:
            return default
        path = Path(value).expanduser()
        return path.resolve() if resolve else path

    def whole(self, var: str, default: int) -> int:
        value = self.text(var)
        if not value:
            return default
        if not (value.isascii() and value.isdigit()) or int(value) < 1:
            self.problems.append(f"{var}={value!r}: expected a positive whole number")
            return default
        return int(value)

    def seconds(self, var: str, default: float) -> float:
        value = self.text(var)
        if not value:
            return default
        try:
            seconds = float(value)
        except ValueError:
            seconds = 0.0
        if not seconds > 0:
            self.problems.append(f"{var}={value!r}: expected a number of seconds greater than 0")
            return default
        return seconds

    def flag(self, var: str, expected: str) -> bool:
        value = self.text(var).lower()
        if value in ("", "1", "true", "yes"):
            return True
        if value in ("0", "false", "no"):
            return False
        self.problems.append(f"{var}={value!r}: expected {expected}")
        return True

    def choice(self, var: str, choices: tuple[str, ...]) -> str:
        value = self.text(var) or choices[0]
        if value not in choices:
            self.problems.append(f"{var}={value!r}: expected one of {', '.join(choices)}")
            return choices[0]
        return value

    def depth(self) -> Depth:
        value = self.text("TAXO_DEPTH")
        if not value:
            return MAX_LEVEL
        try:
            return parse_depth(value)
        except ValueError:
            self.problems.append(
                f"TAXO_DEPTH={value!r} is not a taxonomy depth: expected 3 (the default), full, "
                "or a positive whole number of levels"
            )
            return MAX_LEVEL

    def raise_problems(self) -> None:
        if self.problems:
            raise InputError("bad setting(s): " + "; ".join(self.problems))


def _at_depth(reference_name: str, depth: Depth) -> str:
    # The reference's names at depth 3; other depths get their own files, so switching back and
    # forth never overwrites the other depth's tables.
    return reference_name.replace("-l3.", f"-{depth_suffix(depth)}.")


def taxonomy_file(depth: Depth) -> str:
    """The trimmed taxonomy's Parquet file: shopify-taxonomy-l3.parquet at depth 3, -full, -l5 ..."""
    return _at_depth(TRIMMED_TAXONOMY_FILE, depth)


def experiment_file(depth: Depth) -> str:
    """The evaluation table's Parquet file: shopify-products-experiment-l3.parquet at depth 3, -full ..."""
    return _at_depth(EXPERIMENT_FILE, depth)
