"""`taxo-pipeline serve`: the HTTP classification service (FastAPI on uvicorn) for the leaderboard's best
result, or the approach/model/variant named. It checks the warehouse every TAXO_SERVE_RELOAD_S seconds
and loads a re-evaluated result without a restart; SIGTERM or Ctrl-C stop it and its SIE server."""

from __future__ import annotations

import argparse
import logging
import signal
from functools import partial

from taxo_pipeline.approaches.registry import approach as approach_named
from taxo_pipeline.cli.arguments import positive_int
from taxo_pipeline.dataset.tables import load_corrections
from taxo_pipeline.serving.model import Loader, Names, fingerprint, load_served, settings_problem
from taxo_pipeline.sie.dev_server import dev_sie
from taxo_pipeline.sie.model_catalogue import validate_model_id
from taxo_pipeline.workspace import Workspace

log = logging.getLogger("taxo_pipeline")


def _precision(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"expected a precision between 0 and 1 (exclusive), e.g. 0.9, got {text!r}")
    return value


def add_serve(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "serve", help="HTTP classification service for the best evaluated result (POST /classify)",
        description=__doc__.split("\n\n")[0],
    )  # fmt: skip
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=positive_int, default=8000, help="port (default 8000)")
    parser.add_argument("--approach", help="approach name (default: the leaderboard's best)")
    parser.add_argument("--model", type=validate_model_id, help="model id (default: the best evaluated for the approach)")
    parser.add_argument("--variant", help="category documents: full-path, leaf, full-depth, both (default: the best)")
    parser.add_argument("--top-k", type=positive_int, default=5, help="candidates per product (default 5)")
    parser.add_argument("--target-precision", type=_precision,
                        help="mark products whose calibrated confidence is below it `needs_review`")  # fmt: skip
    parser.set_defaults(run=run_serve)


def _stop_on_sigterm() -> None:
    """SIGTERM unwinds like Ctrl-C: uvicorn finishes its requests, then re-raises the signal it caught to
    this handler, and the SIE server's context stops it. The default handler would kill the process there."""

    def stop(signum: int, frame: object) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)


def run_serve(args: argparse.Namespace) -> int:
    from threadpoolctl import threadpool_limits

    from taxo_pipeline.serving import http_server
    from taxo_pipeline.serving.app import Limits, create_app
    from taxo_pipeline.serving.backend import BackendMonitor

    # A request's search is one small matrix product; OpenBLAS's idle threads spin for milliseconds after
    # it and took a core from the SIE server encoding the next request (41 -> 31 ms a product on 2 CPUs).
    threadpool_limits(limits=1, user_api="blas")

    names = Names(args.approach, args.model, args.variant, args.top_k, args.target_precision)
    workspace = Workspace.from_env()  # built once: the loader's reloads read the same settings
    setup = workspace.settings
    limits = Limits(setup.serve_max_batch, setup.serve_max_in_flight, setup.serve_deadline_s, setup.serve_max_body_bytes,
                    setup.serve_header_timeout_s)
    server_limits = http_server.ServerLimits(setup.serve_header_timeout_s, setup.serve_max_connections)
    if names.approach:
        approach_named(names.approach, setup.approaches)  # an unknown name fails here, listing the known ones
    found = fingerprint(workspace, names)  # no evaluation to serve fails before any server starts
    load_corrections(workspace)  # so does a corrections file with a bad row
    sock = http_server.bind(args.host, args.port)  # a used port fails before any SIE server starts
    log.info(f"serving {found.key} (strict hF1 {found.strict_f1:.3f}) on http://{args.host}:{args.port} (docs at /docs)")
    _stop_on_sigterm()
    with sock, dev_sie(workspace.sie, workspace.data_dir, setup.models, logger=log) as url:
        loader = Loader(partial(load_served, workspace, names, url, limits.deadline_s), partial(fingerprint, workspace, names),
                        setup.serve_reload_s, close_after_s=2 * limits.deadline_s)
        backend = BackendMonitor(url, partial(settings_problem, workspace, loader))
        http_server.server(create_app(loader, limits, backend), server_limits).run(sockets=[sock])
    return 0
