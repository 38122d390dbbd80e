"""Running the definitions from the commands, outside Dagster's daemon: the instance the commands and
`taxo-pipeline dev` share and one in-process run (runs.py), the run launcher that knows a command's
process (launcher.py), and "materialize what is stale", the daemon's automation loop in one go
(automation.py). `taxo_pipeline/cli/` parses arguments, calls these and prints.

No module here defines a Dagster object: `load_from_defs_folder` imports them with the rest of defs/
and finds nothing to load. They take paths and settings as arguments, never from the environment.
"""

# The logger a completed run's Dagster events are copied to (the commands send it to the log file only).
RUN_EVENTS_LOGGER = "taxo_pipeline.run_events"
