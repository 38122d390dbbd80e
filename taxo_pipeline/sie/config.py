"""Where inference runs and how long it may take, as the sie package is told it: settings.py reads the
variables into an `SIESettings` and each front door hands it down (`Workspace.sie`); nothing in sie
reads them itself."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class SIESettings:
    """Where inference runs and how long it may take."""

    base_url: str | None = None  # SIE_BASE_URL, without a trailing slash; None: a local server
    api_key: str | None = field(default=None, repr=False)  # SIE_API_KEY
    device: str = "cpu"  # TAXO_SIE_DEVICE, for a local server
    start_timeout_s: float = 600.0  # TAXO_SIE_START_TIMEOUT_S: a local server's start, models loaded
    timeout_s: float = 300.0  # TAXO_SIE_TIMEOUT_S: one request
    connect_timeout_s: float = 10.0  # TAXO_SIE_CONNECT_TIMEOUT_S
    provision_timeout_s: float = 600.0  # TAXO_SIE_PROVISION_TIMEOUT_S: a cluster scaling up for a model
    # TAXO_SIE_STATE: where `dev` and `serve` publish their server for every command (<data_dir>/sie-server.json)
    state_file: Path | None = None
    warm: bool = True  # TAXO_SIE_WARM: commands use that warm server (1) or always start their own (0)
