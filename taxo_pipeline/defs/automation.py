"""What reruns on its own: eager assets (a changed model fingerprint, upstream table or code version
recomputes what depends on it, and only that; what is missing is computed) and the automation sensor
that evaluates them, running by default. The weekly data refresh that sets it off is in defs/ingest/refresh.py."""

import dagster as dg

from taxo_pipeline.defs.feedback.corrections import corrections_file
from taxo_pipeline.defs.models.fingerprints import FINGERPRINT_SOURCES
from taxo_pipeline.workspace import Workspace

_AC = dg.AutomationCondition
# The tag the daemon puts on the runs the automation requests; `taxo-pipeline materialize` puts it on its own.
AUTOMATION_RUN_TAGS = {"dagster/from_automation_condition": "true"}
# eager() alone ignores code versions and fills only partitions that go missing after it was switched
# on (a fresh instance would wait for someone to materialize the data). So code_version_changed()
# reruns every partition of an asset with a new code_version, and the last clause starts whatever is
# missing once its inputs are there. It skips a partition whose last run failed, so a failure is not
# retried every tick: eager() reruns it once an input changes. `taxo-pipeline materialize` evaluates
# the same condition (defs/runner/automation.py).
_MISSING = (
    _AC.missing() & ~_AC.any_deps_missing() & ~_AC.in_progress() & ~_AC.any_deps_in_progress() & ~_AC.execution_failed()
).with_label("missing, inputs present, last run not failed")
# A new model fingerprint reruns every partition of the model, and what reads them, until the automation
# has requested it or one of its runs has rewritten it. eager() alone counts any materialization since the
# last evaluation as handling it, and cannot tell whether it came before or after the change (an
# observation has no time Dagster compares): an `eval` (--limit or not), `predict` or UI run of one
# partition before the new weights kept that partition stale. Such a run after the change costs one more
# run, never a stale result. An input the automation reruns now makes a partition stale the same way.
# The reviewers' corrections file counts the same way: its new version reruns label transfer.
_FINGERPRINTS = dg.AssetSelection.assets(*(source.key for source in FINGERPRINT_SOURCES.values()), corrections_file.key)
_MODEL_CHANGED = (
    _AC.any_deps_match(_AC.newly_updated()).allow(_FINGERPRINTS) | _AC.any_deps_match(_AC.will_be_requested())
).with_label("model fingerprint changed, or an input reruns")
_BY_AUTOMATION = (
    _AC.newly_requested() | _AC.any_new_update_has_run_tags(tag_values=AUTOMATION_RUN_TAGS)
).with_label("requested or rewritten by the automation")
_STALE_MODEL = (
    _MODEL_CHANGED.since(_BY_AUTOMATION) & ~_AC.any_deps_missing() & ~_AC.in_progress() & ~_AC.any_deps_in_progress()
).with_label("model changed since the automation last ran it")
AUTOMATION = _AC.eager() | _AC.code_version_changed() | _MISSING | _STALE_MODEL


def build_automation_sensor(workspace: Workspace) -> dg.AutomationConditionSensorDefinition:
    """The sensor that evaluates AUTOMATION every TAXO_AUTOMATION_INTERVAL_S (taxo_pipeline/definitions.py
    builds it from the code location's one Workspace)."""
    return dg.AutomationConditionSensorDefinition(
        "evaluation_automation",
        target=dg.AssetSelection.all(),
        default_status=dg.DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=workspace.settings.automation_interval_s,
        description="Runs what the automation requests: what is missing once its inputs are there, the partitions "
        "of a model whose fingerprint changed, everything downstream of refreshed data, every partition of an "
        "asset whose code_version changed.",
    )
