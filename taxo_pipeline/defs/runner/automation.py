""""Materialize what is stale" (`taxo-pipeline materialize`): Dagster's automation decides what runs, as
for the daemon.

It does in one go what the daemon's two sensors do tick by tick: sync the model partitions and
fingerprints, evaluate AUTOMATION (the automation sensor's condition, with the command's own cursor
kept in the instance), run what it requests, one in-process run per partition, and evaluate again
until it requests nothing. So the command, the daemon and the UI agree on what is stale: whatever
one of them materialized, the others do not run again.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import dagster as dg

from taxo_pipeline.defs.automation import AUTOMATION_RUN_TAGS
from taxo_pipeline.defs.feedback.corrections import corrections_observations
from taxo_pipeline.defs.ingest.assets import SOURCE_METADATA, source_data_version, source_file
from taxo_pipeline.defs.models.fingerprints import model_fingerprints
from taxo_pipeline.defs.models.partitions import PARTITIONS, partition_models
from taxo_pipeline.defs.models.sensors import DATA_VERSION_TAG, apply_model_sync, model_sync
from taxo_pipeline.defs.resources import SIEResource, WorkspaceResource
from taxo_pipeline.defs.runner.runs import check_sources, materialize
from taxo_pipeline.defs.training.assets import fine_tuned_encoder
from taxo_pipeline.errors import RunFailedError
from taxo_pipeline.sie.model_catalogue import Catalogue, load_catalogue
from taxo_pipeline.sie.server import ensure_sie

log = logging.getLogger("taxo_pipeline")

# Where the command keeps its automation cursor: the instance's key-value store, beside the daemon's.
CURSOR_KEY = "taxo_pipeline/materialize/automation_cursor"
# {partitions definition: the name of its partitioning}, to read the model ids in its keys.
_PARTITIONINGS = {partitions_def: name for name, partitions_def in PARTITIONS.items()}
RETRY_HINT = (
    "The automation reruns it once one of its inputs changes (data, model, code); to retry it "
    "unchanged, materialize it from the Dagster UI (`taxo-pipeline dev`)."
)


@dataclass(frozen=True)
class PlannedRun:
    partition_key: str | None
    assets: tuple[dg.AssetKey, ...]
    models: frozenset[str]  # the model ids its assets call through SIE

    def describe(self) -> str:
        assets = ", ".join(key.to_user_string() for key in self.assets)
        return f"{assets} for {self.partition_key}" if self.partition_key else assets


def materialize_stale(
    instance: dg.DagsterInstance,
    *,
    catalogue: Catalogue,
    storage: WorkspaceResource,
    sources: Mapping[str, str | None],
    warehouse: Path,
    console_level: str = "CRITICAL",
) -> int:
    """Materialize in `instance` what is missing or stale: the raw assets whose source changed, then what
    the automation requests until it requests nothing; the number of runs launched. `catalogue`: the
    models (the enabled ones get partitions); `sources`: {"products" or "taxonomy": the path or URL given,
    or None for its default}; `warehouse`: the warehouse file (a missing one recomputes everything).
    With nothing changed, no run starts, no server starts and no model is called."""
    from taxo_pipeline.definitions import defs  # loading definitions is slow; only commands that run need it

    # The same partitions and fingerprints the sensor keeps: disabled models leave the automation's view.
    def sync_models() -> dict[str, str]:
        sync = model_sync(instance, catalogue, storage.workspace())
        apply_model_sync(instance, sync)
        return sync.fingerprints

    sync_models()
    for observation in corrections_observations(instance, storage.workspace()):  # as corrections_sensor records it
        instance.report_runless_asset_event(observation)
    graph = defs.resolve_asset_graph()
    check_sources(storage, sources)
    runner = InProcessRuns(instance, graph, sie_assets(defs), source_ops_config(graph, sources), storage, console_level)
    with runner:
        if changed := changed_sources(instance, graph, sources, storage, warehouse_exists=warehouse.exists()):
            runner.launch(PlannedRun(None, tuple(changed), frozenset()))
        run_automation(defs, instance, runner, sync_models)
    return runner.launched


def source_assets(graph) -> dict[dg.AssetKey, str]:
    """{raw asset: the source it reads}, from the assets' definition metadata."""
    return {
        key: graph.get(key).metadata[SOURCE_METADATA]
        for key in graph.materializable_asset_keys
        if SOURCE_METADATA in graph.get(key).metadata
    }


def source_ops_config(graph, overrides: Mapping[str, str | None]) -> dict[str, dict]:
    """Run config that points each raw asset at the source given on the command line, if any."""
    return {
        key.to_python_identifier(): {"config": {"source": overrides[what]}}
        for key, what in source_assets(graph).items()
        if overrides.get(what)
    }


def changed_sources(
    instance: dg.DagsterInstance, graph, overrides: Mapping[str, str | None], storage: WorkspaceResource,
    *, warehouse_exists: bool,
) -> list[dg.AssetKey]:  # fmt: skip
    """The raw assets to materialize before asking the automation: those never materialized, and those
    whose source file (its content or where it lies) is not the one their last materialization read.
    The automation then reruns what reads them. A missing warehouse makes every one count as changed,
    so everything is computed again into a new one."""
    changed = []
    for key, what in source_assets(graph).items():
        event = instance.get_latest_materialization_event(key)
        last = event.asset_materialization if event else None
        _, path = source_file(storage, what, overrides.get(what))
        if not (warehouse_exists and last and _read(last, path)):
            changed.append(key)
    return changed


def _read(materialization: dg.AssetMaterialization, path: Path) -> bool:
    """Whether the materialization read this file as it is now."""
    same_content = materialization.tags.get(DATA_VERSION_TAG) == source_data_version(path).value
    return same_content and materialization.metadata.get("local_path") == dg.MetadataValue.path(str(path))


def sie_assets(defs: dg.Definitions) -> frozenset[dg.AssetKey]:
    """The assets that call models: those needing the SIE resource."""
    sie_keys = {name for name, resource in (defs.resources or {}).items() if isinstance(resource, SIEResource)}
    graph = defs.resolve_asset_graph()
    return frozenset(
        key for key in graph.materializable_asset_keys if graph.get(key).assets_def.required_resource_keys & sie_keys
    )


def called_models(partitions_def: dg.PartitionsDefinition | None, partition_key: str | None) -> set[str]:
    """The model ids in a partition key of one of the model partitionings; none for the data assets."""
    partitioning = _PARTITIONINGS.get(partitions_def)
    return set(partition_models(partitioning, partition_key).ids) if partitioning else set()


def requested_runs(
    graph, result: dg.EvaluateAutomationConditionsResult, sie_keys: frozenset[dg.AssetKey]
) -> list[PlannedRun]:
    """What one evaluation requests, as one run per partition (upstream partitionings first)."""
    groups: dict[tuple, list[dg.AssetKey]] = defaultdict(list)
    for key in graph.materializable_asset_keys:
        for partition_key in result.get_requested_partitions(key):
            groups[graph.get(key).partitions_def, partition_key].append(key)
    order = {key: position for position, key in enumerate(graph.toposorted_asset_keys)}
    runs = []
    for (partitions_def, partition_key), keys in groups.items():
        keys = sorted(keys, key=order.__getitem__)
        called = set().union(*(called_models(partitions_def, partition_key) for key in keys if key in sie_keys))
        runs.append(PlannedRun(partition_key, tuple(keys), frozenset(called)))
    return sorted(runs, key=lambda run: (order[run.assets[0]], str(run.partition_key)))


def models_downstream(instance: dg.DagsterInstance, graph, runs: Iterable[PlannedRun], sie_keys) -> frozenset[str]:
    """The models the runs call, and those of every partition downstream of them (what the next
    evaluations will request), so one server serves the whole command."""
    todo = [(key, run.partition_key) for run in runs for key in run.assets]
    seen: set[tuple[dg.AssetKey, str | None]] = set()
    # The graph's partition mappings resolve the dynamic (model) partitions through this context.
    with dg.partition_loading_context(dynamic_partitions_store=instance):
        while todo:
            if (asset_partition := todo.pop()) not in seen:
                seen.add(asset_partition)
                children = graph.get_children_partitions(*asset_partition)
                todo.extend((child.asset_key, child.partition_key) for child in children)
    return frozenset().union(
        *(called_models(graph.get(key).partitions_def, partition) for key, partition in seen if key in sie_keys)
    )


class InProcessRuns:
    """Runs planned runs in-process, against one SIE server started only when a run calls a model and
    only for the models the command needs (started again with more if a later run needs another)."""

    def __init__(
        self, instance: dg.DagsterInstance, graph, sie_keys: frozenset[dg.AssetKey], ops_config: dict[str, dict],
        storage: WorkspaceResource, console_level: str = "CRITICAL",
    ):  # fmt: skip
        self.instance, self.graph, self.sie_keys, self.ops_config = instance, graph, sie_keys, ops_config
        self.storage, self.console_level = storage, console_level
        self.launched = 0
        self._server = contextlib.ExitStack()
        self._served: frozenset[str] = frozenset()
        self._fingerprints: dict[str, str] = {}
        self._url: str | None = None

    def __enter__(self) -> InProcessRuns:
        return self

    def __exit__(self, *exc_info) -> None:
        self._server.close()

    def serve(self, models: frozenset[str]) -> None:
        """A server for `models` too; started again when one it serves has changed (a fine-tuned encoder
        trained by an earlier run of this command has new weights)."""
        workspace = self.storage.workspace()
        wanted = self._served | models
        fingerprints = model_fingerprints(workspace, load_catalogue(workspace.settings.models), wanted)
        if wanted != self._served or fingerprints != self._fingerprints:
            self._server.close()
            self._served, self._fingerprints = wanted, fingerprints
            self._url = self._server.enter_context(
                ensure_sie(workspace.sie, workspace.data_dir, workspace.settings.models, sorted(self._served), logger=log)
            )

    def launch(self, run: PlannedRun) -> None:
        self.serve(run.models)
        names = [key.to_user_string() for key in run.assets]
        log.info("run %d: %s", self.launched + 1, run.describe())
        ops = {name: config for name, config in self.ops_config.items() if name in names}
        self.launched += 1
        materialize(
            names, instance=self.instance, sie_url=self._url if run.models else None, storage=self.storage,
            ops_config=ops, partition_key=run.partition_key, tags=AUTOMATION_RUN_TAGS, console_level=self.console_level,
        )  # fmt: skip


@contextlib.contextmanager
def dynamic_partitions_read_once(instance: dg.DagsterInstance) -> Iterator[None]:
    """An automation evaluation reads each dynamic partition list thousands of times, a query each (a third
    of the evaluation's time); none can change while it runs, so each is read once.

    Not public API: it replaces the instance's method for the evaluation. dg.evaluate_automation_conditions
    takes no partitions store or cache, and some of its reads bypass the caching queryer it builds."""
    instance.get_dynamic_partitions = functools.cache(instance.get_dynamic_partitions)
    try:
        yield
    finally:
        del instance.get_dynamic_partitions  # the class's method again


def launch_round(runner: InProcessRuns, runs: list[PlannedRun], sync_models: Callable[[], dict[str, str]]) -> list[RunFailedError]:
    """Launch one evaluation's runs, the encoder trainings first. A model whose weights they changed sits the
    rest of the round out: the next evaluation requests its partitions for the new fingerprint, where run now
    they would read the old weights and count as done."""
    training = [run for run in runs if fine_tuned_encoder.key in run.assets]
    before = sync_models() if training else {}
    failures = _launch(runner, training)
    changed = {model for model, value in sync_models().items() if before.get(model) != value} if training else set()
    if changed:
        log.info("new weights for %s: their partitions run in the next round", ", ".join(sorted(changed)))
    return failures + _launch(runner, [run for run in runs if run not in training and not run.models & changed])


def _launch(runner: InProcessRuns, runs: list[PlannedRun]) -> list[RunFailedError]:
    failures = []
    for run in runs:
        try:
            runner.launch(run)
        except RunFailedError as exc:
            failures.append(exc)
    return failures


def run_automation(defs: dg.Definitions, instance: dg.DagsterInstance, runner: InProcessRuns,
                   sync_models: Callable[[], dict[str, str]]) -> None:  # fmt: skip
    """Evaluate AUTOMATION, run what it requests, and again until it requests nothing: a partition
    downstream of another is requested once that one has run. A round that trains encoders syncs the model
    partitions and fingerprints again after them, as the sensor would (launch_round): a fine-tuned encoder
    just trained joins the encoders.

    As the daemon saves its cursor once it has submitted a tick's runs, the cursor is saved once every
    run of an evaluation was launched, whatever their outcome: a command stopped before (Ctrl-C, a
    server that does not start) evaluates that round again next time, and a failed run is not retried
    until one of its inputs changes. A failed run stops the command after the others of its round."""
    graph = runner.graph
    # The instance's key-value store (run storage cursors, where the daemon keeps its own): no public API.
    saved = instance.run_storage.get_cursor_values({CURSOR_KEY}).get(CURSOR_KEY)
    cursor = dg.deserialize_value(saved) if saved else None
    # Each evaluation after the first requests what the previous runs updated, one level further down
    # the graph (a trained encoder's new fingerprint one more); more means a condition that never settles.
    evaluations = len(graph.toposorted_asset_keys_by_level) + 2
    for _ in range(evaluations):
        with dynamic_partitions_read_once(instance):
            result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor)
        runs = requested_runs(graph, result, runner.sie_keys)
        log.info("automation: %d runs requested", len(runs))
        if any(run.models for run in runs):
            runner.serve(models_downstream(instance, graph, runs, runner.sie_keys))
        failures = launch_round(runner, runs, sync_models)
        cursor = result.cursor
        instance.run_storage.set_cursor_values({CURSOR_KEY: dg.serialize_value(cursor)})
        if failures:
            more = f" ({len(failures) - 1} more runs failed: see the Dagster UI)" if len(failures) > 1 else ""
            raise RunFailedError(f"{failures[0]}{more}\n{RETRY_HINT}") from failures[0]
        if not runs:
            return
    raise RuntimeError(
        f"the automation still requests runs after {evaluations} evaluations "
        f"({', '.join(run.describe() for run in runs)}): a condition in taxo_pipeline/defs/automation.py never settles"
    )
