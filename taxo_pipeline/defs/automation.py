"""What reruns on its own: eager assets (a changed model fingerprint, upstream table or code version
recomputes what depends on it, and only that) and the automation sensor that evaluates them, running
by default. The weekly data refresh that sets it off is in defs/ingest/refresh.py."""

import dagster as dg

# eager() alone ignores code versions; with code_version_changed() a new code_version on an asset
# reruns every partition of it.
AUTOMATION = dg.AutomationCondition.eager() | dg.AutomationCondition.code_version_changed()

automation_sensor = dg.AutomationConditionSensorDefinition(
    "evaluation_automation",
    target=dg.AssetSelection.all(),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
    description="Runs what the eager automation requests: the partitions of a model whose fingerprint changed, "
    "everything downstream of refreshed data, every partition of an asset whose code_version changed.",
)
