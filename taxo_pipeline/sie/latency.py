"""One SIE request's timing, kept for the latency figures of the metric tables."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field


@dataclass(frozen=True)
class LatencyRecord:
    operation: str
    model: str
    batch_size: int  # inputs (or candidates) in the request
    latency_ms: float
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex)
