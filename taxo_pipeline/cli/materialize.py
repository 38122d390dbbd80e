"""The main job, `taxo-pipeline materialize`: Dagster's automation decides what runs, as for the daemon
(taxo_pipeline/defs/runner/automation.py), then the leaderboard is printed."""

from __future__ import annotations

import argparse
import logging

from taxo_pipeline import settings
from taxo_pipeline.cli.arguments import add_source_arguments
from taxo_pipeline.cli.common import dagster_console_level
from taxo_pipeline.defs.resources import WorkspaceResource
from taxo_pipeline.evaluation.leaderboard import leaderboard_text
from taxo_pipeline.sie.model_catalogue import load_catalogue
from taxo_pipeline.warehouse.store import Warehouse
from taxo_pipeline.warehouse.views import leaderboard

log = logging.getLogger("taxo_pipeline")


def add_materialize(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "materialize",
        help="the main job: what is missing or changed, every partition of the enabled models, then the results",
        description="Sync the model partitions and fingerprints, then materialize what Dagster's automation "
        "requests (the condition the daemon uses): what is missing, and what a changed source, model or "
        "code version made stale, in the persistent Dagster instance (runs show in the UI), then print the "
        "results. With nothing changed, no run starts, no server starts and no model is called.",
    )
    add_source_arguments(parser)
    parser.set_defaults(run=run_materialize)


def run_materialize(args: argparse.Namespace) -> int:
    # The runner imports the definitions' modules: slow, so only when this command runs.
    from taxo_pipeline.defs.runner.automation import materialize_stale
    from taxo_pipeline.defs.runner.runs import command_instance

    setup = settings.current()
    launched = materialize_stale(
        command_instance(setup.dagster_home),
        catalogue=load_catalogue(setup.models),
        storage=WorkspaceResource(),
        sources={"products": args.products, "taxonomy": args.taxonomy},
        warehouse=setup.warehouse,
        console_level=dagster_console_level(),
    )
    log.info("runs launched: %d", launched)
    print(leaderboard_text(leaderboard(Warehouse(setup.warehouse))))
    return 0
