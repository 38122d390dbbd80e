"""What reruns on its own: eager assets (a changed model fingerprint, upstream table or code version
recomputes what depends on it, and only that), the automation sensor that evaluates them, running
by default, and a weekly rerun of the whole evaluation."""

import dagster as dg

from taxo_pipeline.assets.jobs import data_refresh

# eager() alone ignores code versions; with code_version_changed() a new code_version on an asset
# reruns every partition of it.
AUTOMATION = dg.AutomationCondition.eager() | dg.AutomationCondition.code_version_changed()
WEEKLY_CRON = "0 4 * * 1"  # Mondays 04:00 UTC

automation_sensor = dg.AutomationConditionSensorDefinition(
    "evaluation_automation",
    target=dg.AssetSelection.all(),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
    description="Runs what the eager automation requests: the partitions of a model whose fingerprint changed, "
    "everything downstream of refreshed data, every partition of an asset whose code_version changed.",
)

weekly_evaluation = dg.ScheduleDefinition(
    name="weekly_evaluation",
    job=data_refresh,
    cron_schedule=WEEKLY_CRON,
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Refreshes the data assets weekly; the eager automation then reruns every partition of every "
    "enabled model downstream of them.",
)
