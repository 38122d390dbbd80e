"""What reruns on its own: eager assets (a changed model fingerprint, upstream table or code version
recomputes what depends on it, and only that; what is missing is computed) and the automation sensor
that evaluates them, running by default. The weekly data refresh that sets it off is in defs/ingest/refresh.py."""

import dagster as dg

from taxo_pipeline import settings

_AC = dg.AutomationCondition
# eager() alone ignores code versions and fills only partitions that go missing after it was switched
# on (a fresh instance would wait for someone to materialize the data). So code_version_changed()
# reruns every partition of an asset with a new code_version, and the last clause starts whatever is
# missing once its inputs are there. It skips a partition whose last run failed, so a failure is not
# retried every tick: eager() reruns it once an input changes. `taxo-pipeline materialize` evaluates
# the same condition (cli/materialize.py).
_MISSING = (
    _AC.missing() & ~_AC.any_deps_missing() & ~_AC.in_progress() & ~_AC.any_deps_in_progress() & ~_AC.execution_failed()
).with_label("missing, inputs present, last run not failed")
AUTOMATION = _AC.eager() | _AC.code_version_changed() | _MISSING

automation_sensor = dg.AutomationConditionSensorDefinition(
    "evaluation_automation",
    target=dg.AssetSelection.all(),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=settings.current().automation_interval_s,
    description="Runs what the automation requests: what is missing once its inputs are there, the partitions "
    "of a model whose fingerprint changed, everything downstream of refreshed data, every partition of an "
    "asset whose code_version changed.",
)
