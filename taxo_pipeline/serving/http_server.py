"""uvicorn as the service runs it: the port bound before anything else starts, uvicorn's own limits
(open connections, keep-alive), and a limit it lacks: a connection gets `header_timeout_s` to send each
request's headers, so clients that trickle them (slowloris) cannot hold sockets open for ever. uvicorn's
keep-alive timer only closes a connection that sends nothing; any byte restarts it."""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from taxo_pipeline.errors import InputError


@dataclass(frozen=True)
class ServerLimits:
    header_timeout_s: float
    max_connections: int
    keep_alive_s: float = 5.0
    graceful_shutdown_s: float = 30.0


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound now: a port in use fails here, before any SIE server starts."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a restart need not wait out TIME_WAIT
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise InputError(f"cannot listen on {host}:{port}: {exc.strerror}; choose another --port or stop what uses it") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _header_timeout_protocol(timeout_s: float) -> type[HttpToolsProtocol]:
    class HeaderTimeoutProtocol(HttpToolsProtocol):
        _header_timer: asyncio.TimerHandle | None = None

        def _arm(self) -> None:
            self._disarm()
            self._header_timer = self.loop.call_later(timeout_s, self._headers_too_slow)

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _headers_too_slow(self) -> None:
            if not self.transport.is_closing():
                self.transport.close()

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def on_headers_complete(self) -> None:
            self._disarm()
            super().on_headers_complete()

        def on_response_complete(self) -> None:
            pipelined = bool(self.pipeline)  # a request whose headers arrived already starts now
            super().on_response_complete()
            if not pipelined and not self.transport.is_closing():
                self._arm()  # the next request on this keep-alive connection has the same time

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

    return HeaderTimeoutProtocol


def server(app: Any, limits: ServerLimits) -> uvicorn.Server:
    config = uvicorn.Config(
        app, http=_header_timeout_protocol(limits.header_timeout_s), limit_concurrency=limits.max_connections,
        timeout_keep_alive=limits.keep_alive_s, timeout_graceful_shutdown=limits.graceful_shutdown_s,
        access_log=False, log_config=None,  # the service's access log is its own (operations.py)
    )  # fmt: skip
    return uvicorn.Server(config)
