"""NATS connection options from validated settings: servers, TLS, credentials, reconnect, events.

Settings arrive validated (server URLs parsed by `core.servers`, TLS paths laid out by
`Settings.tls_files`); nothing is re-checked here but what only the file system can tell.
Credentials never reach a log line: server URLs carry none (their userinfo was taken apart
when parsed), and error descriptions are scrubbed of every configured secret.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import os
import random
import re
import ssl
from collections.abc import Callable, Coroutine, Iterable, Mapping
from typing import Any

import nats.errors
from nats.aio.client import Client, Server

from choria_broker_adapters.config.settings import Settings
from choria_broker_adapters.core.backoff import backoff_delay
from choria_broker_adapters.core.servers import ServerList, redact

# Events passed to `on_event(event, detail)`; `detail` never holds credentials.
EVENT_ERROR = "error"
EVENT_SLOW_CONSUMER = "slow_consumer"
EVENT_DISCONNECTED = "disconnected"
EVENT_RECONNECTED = "reconnected"
EVENT_CLOSED = "closed"
# A frame nats-py could not turn into a message (dropped, the connection keeps reading).
EVENT_MALFORMED_FRAME = "malformed_frame"
# nats-py's read loop stopped on an unexpected error; the client is reconnecting at once.
EVENT_READ_LOOP_FAILED = "read_loop_failed"
# The server reported an error and closed the connection; the client is reconnecting.
EVENT_SERVER_ERROR = "server_error"
# The server refused a publish for lack of permission; `detail` is the subject, in lower case
# (nats-py lowercases the server's error text).
EVENT_PUBLISH_DENIED = "publish_denied"

# Outgoing buffer the client flushes at: room for several publishers' windows of 1 KiB messages.
PENDING_SIZE = 16 * 1024 * 1024
RECONNECT_WAIT_INITIAL = 0.25
RECONNECT_WAIT_MAX = 5.0

OnEvent = Callable[[str, str], None]


class ConnectConfigError(ValueError):
    """The settings cannot produce a usable connection (missing TLS file, missing nkeys, ...)."""


# ---------------------------------------------------------------------------------------------
# TLS


def tls_context(settings: Settings, *, disable_tls: bool) -> ssl.SSLContext | None:
    """Mutual-TLS client context: TLS 1.2+, our certificate, and the configured CA as the only trust root."""
    if disable_tls:
        return None
    files = settings.tls_files()
    if not files:
        raise ConnectConfigError(
            f"security provider {settings.security_provider!r} has no TLS file layout here; "
            "use puppet, file or choria (or --disable-tls)"
        )
    for role, (path, key) in files.items():
        if not os.path.isfile(path):
            raise ConnectConfigError(f"TLS {role} file {path} does not exist (from {key})")
        if not os.access(path, os.R_OK):
            raise ConnectConfigError(f"TLS {role} file {path} is not readable (from {key})")
    certificate, key, ca = (files[role][0] for role in ("certificate", "key", "ca"))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies the peer and its host name
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_verify_locations(cafile=ca)
    except (ssl.SSLError, OSError) as exc:
        raise ConnectConfigError(f"cannot load TLS CA {ca}: {exc}") from exc
    try:
        context.load_cert_chain(certfile=certificate, keyfile=key)
    except (ssl.SSLError, OSError) as exc:
        raise ConnectConfigError(f"cannot load TLS certificate {certificate} with key {key}: {exc}") from exc
    return context


# ---------------------------------------------------------------------------------------------
# connect() options


def connect_options(
    settings: Settings,
    *,
    servers: ServerList,
    name: str,
    disable_tls: bool,
    on_event: OnEvent | None,
) -> dict[str, Any]:
    """Keyword arguments for `nats.aio.client.Client.connect` (reconnect forever once connected)."""
    options: dict[str, Any] = {
        "servers": list(servers),
        "name": name,
        "allow_reconnect": True,
        "max_reconnect_attempts": -1,
        "reconnect_time_wait": RECONNECT_WAIT_INITIAL,
        # Picks the next server and a jittered, growing delay so that many clients cut off
        # together (a server restart) do not reconnect in lockstep.
        "reconnect_to_server_handler": jittered_reconnect,
        "connect_timeout": settings.connect_timeout,
        "pending_size": PENDING_SIZE,
    }
    context = tls_context(settings, disable_tls=disable_tls)
    if context is not None:
        options["tls"] = context
    options.update(_credentials(settings, servers))
    secrets = [options[name] for name in ("password", "token") if options.get(name)]
    credentials = settings.nats_credentials
    if credentials:
        if not os.path.isfile(credentials):
            raise ConnectConfigError(
                f"NATS credentials file {credentials} does not exist (plugin.nats.credentials)"
            )
        if importlib.util.find_spec("nkeys") is None:
            raise ConnectConfigError(
                "plugin.nats.credentials needs the nkeys package: pip install 'nats-py[nkeys]'"
            )
        options["user_credentials"] = credentials
    options.update(event_callbacks(on_event, secrets))
    return options


def _credentials(settings: Settings, servers: ServerList) -> dict[str, str]:
    """User and password, or token: from the server URLs when they carry some (as the Go
    client does per URL), else plugin.nats.user/pass."""
    userinfo = getattr(servers, "userinfo", None)
    if userinfo is not None:
        if userinfo.token:
            return {"token": userinfo.token}
        return {"user": userinfo.user or "", "password": userinfo.password or ""}
    found: dict[str, str] = {}
    if settings.nats_user:
        found["user"] = settings.nats_user
    if settings.nats_password:
        found["password"] = settings.nats_password
    return found


def jittered_reconnect(servers: list[Server], _info: dict[str, Any]) -> tuple[Server | None, float]:
    """nats-py reconnect handler: the least-failed server, after a capped exponential jittered delay."""
    if not servers:
        return None, RECONNECT_WAIT_INITIAL
    server = min(servers, key=lambda candidate: candidate.reconnects)
    if server.reconnects == 0:
        return server, random.uniform(0, RECONNECT_WAIT_INITIAL)
    return server, backoff_delay(server.reconnects, RECONNECT_WAIT_INITIAL, RECONNECT_WAIT_MAX)


def event_callbacks(on_event: OnEvent | None, secrets: Iterable[str] = ()) -> dict[str, Any]:
    """nats-py's async callbacks, each reduced to `on_event(event, detail)`."""
    secret_values = [secret for secret in secrets if secret]

    def emit(event: str, detail: str) -> None:
        if on_event is not None:
            on_event(event, scrub(detail, secret_values))

    async def error_cb(exc: Exception) -> None:
        if isinstance(exc, nats.errors.SlowConsumerError):
            emit(EVENT_SLOW_CONSUMER, f"slow consumer on {exc.subject}: messages dropped by the client")
        elif isinstance(exc, MalformedFrameError):
            emit(EVENT_MALFORMED_FRAME, str(exc))
        elif isinstance(exc, ReadLoopFailedError):
            emit(EVENT_READ_LOOP_FAILED, str(exc))
        elif isinstance(exc, ServerClosedError):
            emit(EVENT_SERVER_ERROR, str(exc))
        elif (subject := denied_publish_subject(str(exc))) is not None:
            emit(EVENT_PUBLISH_DENIED, subject)
        else:
            emit(EVENT_ERROR, describe_connect_error(exc))

    async def disconnected_cb() -> None:
        emit(EVENT_DISCONNECTED, "disconnected")

    async def reconnected_cb() -> None:
        emit(EVENT_RECONNECTED, "reconnected")

    async def closed_cb() -> None:
        emit(EVENT_CLOSED, "connection closed")

    return {
        "error_cb": error_cb,
        "disconnected_cb": disconnected_cb,
        "reconnected_cb": reconnected_cb,
        "closed_cb": closed_cb,
    }


_DENIED_PUBLISH = re.compile(r'permissions violation for publish to "([^"]+)"')


def denied_publish_subject(error_text: str) -> str | None:
    """The subject of a server's publish permissions violation, or None for other errors."""
    match = _DENIED_PUBLISH.search(error_text.lower())
    return match.group(1) if match else None


def scrub(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def describe_connect_error(exc: BaseException) -> str:
    """One operator-readable sentence for a connection failure; pure, tested with a table."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return (
            f"TLS certificate verification failed ({getattr(exc, 'verify_message', None) or exc}): "
            "the server's certificate is not signed by the configured CA or does not name the server address"
        )
    if isinstance(exc, ssl.SSLError):
        return f"TLS handshake failed: {getattr(exc, 'reason', None) or exc}"
    if isinstance(exc, nats.errors.AuthorizationError) or "authorization violation" in str(exc).lower():
        return "authorization violation: the server rejected the NATS user/password or credentials"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused (is nats-server running and listening on that address?)"
    if isinstance(exc, TimeoutError | asyncio.TimeoutError | nats.errors.TimeoutError):
        return "timed out"
    if isinstance(exc, nats.errors.NoServersError):
        return "no server could be reached"
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def describe_servers(options: Mapping[str, Any]) -> str:
    servers = options.get("servers", [])
    if isinstance(servers, str):
        servers = [servers]
    return ", ".join(redact(server) for server in servers)


# ---------------------------------------------------------------------------------------------
# the client


# -ERR texts (lower case, as nats-py passes them) after which nats-py already does the right
# thing: a stale connection reconnects, a permissions violation leaves the connection open.
_ERRORS_NATS_PY_HANDLES = ("stale connection", "permissions violation")


class MalformedFrameError(nats.errors.Error):
    """A message frame nats-py cannot represent (sent by a peer, routed to us by the server)."""


class ReadLoopFailedError(nats.errors.Error):
    """nats-py's read loop ended on an error while the connection still counted as connected."""


class ServerClosedError(nats.errors.Error):
    """The server sent -ERR and closed the connection."""


def describe_frame(subject: bytes, reply: bytes, headers: bytes | None, error: BaseException) -> str:
    """What was wrong with a frame, with the peer's bytes shown escaped and cut short."""
    parts = [f"subject {_shown(subject)}"]
    if reply:
        parts.append(f"reply {_shown(reply)}")
    if headers:
        parts.append(f"{len(headers)} header bytes")
    return f"{type(error).__name__} for a message with {', '.join(parts)}; message dropped"


def _shown(raw: bytes, limit: int = 64) -> str:
    text = repr(bytes(raw[:limit]))
    return text + ("..." if len(raw) > limit else "")


class GuardedClient(Client):
    """nats-py's client, kept reading whatever a peer publishes, and kept connected.

    nats-py 2.16 decodes each message's subject, reply and status header as UTF-8 inside its
    read loop; any frame that fails that (a reply subject that is not UTF-8, a header block
    shorter than its NATS/1.0 line, ...) ends the read loop while the connection still reports
    connected, so nothing more is read until the server's stale-connection check, minutes
    later. The server routes such frames from any publisher, so one hostile node could
    silence every ingest worker. Here:

    - a message that cannot be built is dropped and reported (`MalformedFrameError` to the
      error callback); the parser has already consumed its bytes, so reading goes on;
    - a read loop that ends for any other unexpected reason while connected is reported
      (`ReadLoopFailedError`) and the client reconnects at once, resubscribing as usual;
    - an -ERR after which the server closes the connection (maximum payload violation,
      slow consumer, ...) makes the client reconnect instead of closing for good, which is
      what nats-py does for every error other than a stale connection.

    These override private nats-py methods; tests/test_hostile_frames.py checks them against
    the pinned nats-py with real servers.
    """

    @property
    def reading(self) -> bool:
        """True while the read loop runs (a connected client with a dead loop receives nothing)."""
        task = self._reading_task
        return task is not None and not task.done()

    async def _process_msg(
        self, sid: int, subject: bytes, reply: bytes, data: bytes, headers: bytes | None
    ) -> None:
        try:
            await super()._process_msg(sid, subject, reply, data, headers)  # type: ignore[arg-type]
        except Exception as error:
            await self._error_cb(MalformedFrameError(describe_frame(subject, reply, headers, error)))

    async def _read_loop(self) -> None:
        await super()._read_loop()
        if self._status != Client.CONNECTED:
            return  # closing, reconnecting or draining: nats-py ended the loop on purpose
        unparsed = len(self._ps.buf)
        await self._error_cb(
            ReadLoopFailedError(
                f"the NATS client stopped reading ({unparsed} unparsed bytes discarded); reconnecting"
            )
        )
        await self.force_reconnect()

    async def _process_err(self, err_msg: str) -> None:
        closes = (
            self._status == Client.CONNECTED
            and self.options.get("allow_reconnect")
            and not any(kept in err_msg for kept in _ERRORS_NATS_PY_HANDLES)
        )
        if not closes:
            await super()._process_err(err_msg)
            return
        await self._error_cb(
            ServerClosedError(
                f"server error {err_msg.strip()}: the server closes the connection; reconnecting"
            )
        )
        await self.force_reconnect()


# ---------------------------------------------------------------------------------------------
# initial connection


async def connect_with_backoff(
    options: dict[str, Any],
    *,
    log: logging.Logger | logging.LoggerAdapter[Any],
    initial: float = 0.2,
    maximum: float = 10.0,
    stop_event: asyncio.Event | None = None,
) -> Client | None:
    """Connect, retrying the first connection forever with capped exponential backoff and jitter.

    nats-py would retry an unreachable first server silently inside `connect()`; here each
    round tries every server (twice, nats-py's minimum) and logs one line per failed round.
    Once connected, the client's own reconnect settings from `options` apply. Returns None
    when `stop_event` is set before a connection is made.
    """
    secrets = [options[name] for name in ("password", "token") if options.get(name)]
    round_number = 0
    while stop_event is None or not stop_event.is_set():
        round_number += 1
        client = GuardedClient()
        gate = _FirstConnectionGate(options)
        attempt_options = {
            **options,
            **gate.callbacks(),
            # max 1 makes nats-py give up after two quick tries per server instead of forever.
            "max_reconnect_attempts": 1,
            "reconnect_time_wait": 0,
        }
        # nats-py 2.16 can hang inside connect() after a failed TLS handshake (closing the
        # half-upgraded transport never completes), so each round has a deadline, and a
        # stop request ends the wait at once.
        servers = options.get("servers") or [""]
        deadline = float(options.get("connect_timeout", 2.0)) * 2 * len(servers) + 2.0
        try:
            connected = await _first_of(
                client.connect(**attempt_options), deadline, stop_event, gate.tls_failed
            )
        except asyncio.CancelledError:
            await _quietly_close(client)
            raise
        except Exception as exc:
            gate.failures.append(exc)
            connected = False
        if not connected:
            await _quietly_close(client)
            if stop_event is not None and stop_event.is_set():
                return None
            if not gate.failures:
                gate.failures.append(TimeoutError())
        else:
            gate.established = True
            client.options["max_reconnect_attempts"] = options.get("max_reconnect_attempts", -1)
            client.options["reconnect_time_wait"] = options.get("reconnect_time_wait", RECONNECT_WAIT_INITIAL)
            if round_number > 1:
                log.info("connected to %s after %d attempts", describe_servers(options), round_number)
            return client
        failures = gate.failures
        cause = next((failure for failure in reversed(failures) if not _is_generic(failure)), failures[-1])
        delay = backoff_delay(round_number, initial, maximum)
        log.warning(
            "cannot connect to %s: %s; retrying in %.1fs (attempt %d)",
            describe_servers(options),
            scrub(describe_connect_error(cause), secrets),
            delay,
            round_number,
        )
        if stop_event is None:
            await asyncio.sleep(delay)
        else:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop_event.wait(), delay)
    return None


class _FirstConnectionGate:
    """Holds back the caller's callbacks until the first connection is made.

    A failed first attempt fires error, disconnected and closed callbacks from nats-py;
    those failures are collected and logged once per round instead.
    """

    def __init__(self, options: Mapping[str, Any]) -> None:
        self.established = False
        self.failures: list[BaseException] = []
        # Set on a TLS failure: nats-py may then never return from connect(), so the round ends.
        self.tls_failed = asyncio.Event()
        self._forward = {name: options.get(name) for name in ("error_cb", "disconnected_cb", "closed_cb")}

    def callbacks(self) -> dict[str, Any]:
        async def error_cb(exc: Exception) -> None:
            if not self.established:
                self.failures.append(exc)
                if isinstance(exc, ssl.SSLError):
                    self.tls_failed.set()
            elif self._forward["error_cb"] is not None:
                await self._forward["error_cb"](exc)

        async def disconnected_cb() -> None:
            if self.established and self._forward["disconnected_cb"] is not None:
                await self._forward["disconnected_cb"]()

        async def closed_cb() -> None:
            if self.established and self._forward["closed_cb"] is not None:
                await self._forward["closed_cb"]()

        return {"error_cb": error_cb, "disconnected_cb": disconnected_cb, "closed_cb": closed_cb}


async def _first_of(
    connecting: Coroutine[Any, Any, None], deadline: float, *give_up: asyncio.Event | None
) -> bool:
    """Run `connecting`: True when it finished, False on deadline or a give-up event."""
    connect_task = asyncio.ensure_future(connecting)
    event_tasks = [asyncio.ensure_future(event.wait()) for event in give_up if event is not None]
    try:
        await asyncio.wait(
            [connect_task, *event_tasks], timeout=deadline, return_when=asyncio.FIRST_COMPLETED
        )
    except asyncio.CancelledError:
        # The worker is stopping: the attempt is abandoned, and its outcome (often "no servers")
        # retrieved so that asyncio does not report it as an exception nobody looked at.
        connect_task.cancel()
        connect_task.add_done_callback(_retrieve)
        raise
    finally:
        for task in event_tasks:
            task.cancel()
    if connect_task.done():
        connect_task.result()  # raises the connection error, if any
        return True
    connect_task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await connect_task
    return False


def _retrieve(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()


def _is_generic(exc: BaseException) -> bool:
    """Errors that only say 'it failed', hiding the cause reported just before them."""
    return isinstance(exc, nats.errors.NoServersError)


async def _quietly_close(client: Client) -> None:
    # A half-open client may fail to close; there is nothing more to do about it.
    with contextlib.suppress(Exception):
        await asyncio.wait_for(client.close(), 2.0)
