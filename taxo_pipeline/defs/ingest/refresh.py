"""The data job and its weekly schedule: the sources read again, the cleaned and L3 tables rebuilt; the
automation then reruns every partition downstream whose inputs changed."""

import dagster as dg

from taxo_pipeline.defs.ingest.assets import GROUP

DATA_JOB = "data_refresh"
WEEKLY_CRON = "0 4 * * 1"  # Mondays 04:00 UTC

data_refresh = dg.define_asset_job(
    DATA_JOB, selection=dg.AssetSelection.groups(GROUP),
    description="Read the sources again and rebuild the cleaned and L3 tables.",
)  # fmt: skip

weekly_evaluation = dg.ScheduleDefinition(
    name="weekly_evaluation",
    job=data_refresh,
    cron_schedule=WEEKLY_CRON,
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Refreshes the data assets weekly; the eager automation then reruns every partition of every "
    "enabled model downstream of them.",
)
