"""The code location's one Workspace, read from the environment once, when the definitions load: what their
shape depends on (the sensors' intervals, the registered approaches, the executor, the taxonomy depth in
the depth-dependent assets' code versions) comes from it. Runs read theirs through WorkspaceResource."""

from functools import cache

from taxo_pipeline.workspace import Workspace


@cache
def location_workspace() -> Workspace:
    return Workspace.from_env()
