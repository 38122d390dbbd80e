"""Moved to taxo_pipeline/defs/runner/launcher.py. Kept because a DAGSTER_HOME/dagster.yaml that its user
edited still names this module as its run launcher (an unedited one is rewritten with the new path)."""

from taxo_pipeline.defs.runner.launcher import CommandRunLauncher

__all__ = ["CommandRunLauncher"]
