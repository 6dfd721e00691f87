"""transport.connect: TLS contexts, options, and real connections (mTLS, auth, reconnect).

Server address parsing is `core.servers` (tests/test_servers.py); TLS file layouts are
`Settings.tls_files` (tests/test_settings.py)."""

from __future__ import annotations

import asyncio
import dataclasses
import importlib.util
import logging
import ssl
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import nats.errors
import pytest
from nats.aio.client import Client, Server

from choria_broker_adapters.config.brokerconf import RawConfig, parse_text
from choria_broker_adapters.config.settings import Settings, build_settings
from choria_broker_adapters.core.servers import parse_servers
from choria_broker_adapters.devtools.natsserver import NatsServer
from choria_broker_adapters.transport.connect import (
    EVENT_DISCONNECTED,
    EVENT_RECONNECTED,
    RECONNECT_WAIT_MAX,
    ConnectConfigError,
    connect_options,
    connect_with_backoff,
    describe_connect_error,
    jittered_reconnect,
    tls_context,
)
from tests.tlsutil import Pki, make_ca, make_pki

PASSWORD = "Sup3r-s3cret-pa55"  # distinctive, so a leak into logs is easy to find


_MINIMAL = """\
identity = adapter.example.net
plugin.choria.middleware_hosts = h:4222
plugin.choria.adapters = a
plugin.choria.adapter.a.type = jetstream
plugin.choria.adapter.a.ingest.topic = x
"""


def _base_settings() -> Settings:
    raw = RawConfig()
    raw.merge(*parse_text(_MINIMAL, file="/etc/choria/broker.conf"))
    return build_settings(
        raw, config_file="/etc/choria/broker.conf", default_ssldir="/etc/puppetlabs/puppet/ssl"
    )


def StandInSettings(**changes: object) -> Settings:
    """Real validated settings with the connection-related fields changed."""
    if "identity" in changes and "certname" not in changes:
        changes["certname"] = changes["identity"]
    return dataclasses.replace(_base_settings(), **changes)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# pure logic


def _cert_error() -> ssl.SSLCertVerificationError:
    error = ssl.SSLCertVerificationError(1, "certificate verify failed")
    error.verify_message = "unable to get local issuer certificate"
    return error


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (_cert_error(), "TLS certificate verification failed (unable to get local issuer certificate)"),
        (ssl.SSLError(1, "boom"), "TLS handshake failed"),
        (nats.errors.AuthorizationError(), "authorization violation"),
        (nats.errors.Error("nats: 'Authorization Violation'"), "authorization violation"),
        (ConnectionRefusedError(111, "refused"), "connection refused"),
        (TimeoutError(), "timed out"),
        (nats.errors.NoServersError(), "no server could be reached"),
        (RuntimeError("odd"), "RuntimeError: odd"),
    ],
)
def test_describe_connect_error(error: BaseException, expected: str) -> None:
    assert expected in describe_connect_error(error)


def _server(reconnects: int, host: str = "a") -> Server:
    return Server(uri=urlsplit(f"nats://{host}:4222"), reconnects=reconnects)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("reconnects", "low", "high"),
    [(0, 0.0, 0.25), (1, 0.125, 0.25), (3, 0.5, 1.0), (50, RECONNECT_WAIT_MAX / 2, RECONNECT_WAIT_MAX)],
)
def test_jittered_reconnect_delay_grows_and_is_capped(reconnects: int, low: float, high: float) -> None:
    delays = {jittered_reconnect([_server(reconnects)], {})[1] for _ in range(100)}
    assert all(low <= delay <= high for delay in delays)
    assert len(delays) > 1


def test_jittered_reconnect_prefers_the_least_failed_server() -> None:
    chosen, _delay = jittered_reconnect([_server(4, "a"), _server(1, "b"), _server(2, "c")], {})
    assert chosen is not None and chosen.uri.hostname == "b"


def test_tls_context_needs_a_provider_with_a_file_layout() -> None:
    with pytest.raises(ConnectConfigError, match="provider 'pkcs11'"):
        tls_context(StandInSettings(security_provider="pkcs11"), disable_tls=False)


def test_tls_context_disabled_and_missing_files(tmp_path: Path) -> None:
    settings = StandInSettings(ssldir=str(tmp_path))
    assert tls_context(settings, disable_tls=True) is None
    with pytest.raises(ConnectConfigError, match=f"{tmp_path}/certs/adapter.example.net.pem does not exist"):
        tls_context(settings, disable_tls=False)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def file_settings(pki: Pki, ca: Path | None = None) -> Settings:
    return StandInSettings(
        security_provider="file",
        file_certificate=str(pki.client_cert),
        file_key=str(pki.client_key),
        file_ca=str(ca or pki.ca),
    )


def test_tls_context_is_mutual_tls_12_plus_with_only_our_ca(pki: Pki) -> None:
    context = tls_context(file_settings(pki), disable_tls=False)
    assert context is not None
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert [cert["subject"] for cert in context.get_ca_certs()] == [((("commonName", "Test CA ca"),),)]


def test_connect_options(pki: Pki) -> None:
    settings = dataclasses.replace(file_settings(pki), nats_user="adapter", nats_password=PASSWORD)
    options = connect_options(
        settings, servers=parse_servers("h:4222"), name="adapter x", disable_tls=False, on_event=None
    )
    assert options["servers"] == ["nats://h:4222"]
    assert (options["max_reconnect_attempts"], options["allow_reconnect"]) == (-1, True)
    assert (options["user"], options["password"], options["name"]) == ("adapter", PASSWORD, "adapter x")
    assert isinstance(options["tls"], ssl.SSLContext)
    assert options["connect_timeout"] == 2.0
    plain = connect_options(
        StandInSettings(), servers=parse_servers("h:4222"), name="x", disable_tls=True, on_event=None
    )
    assert "tls" not in plain and "user" not in plain and "password" not in plain


def test_credentials_file_must_exist(tmp_path: Path) -> None:
    settings = StandInSettings(nats_credentials=str(tmp_path / "missing.creds"))
    with pytest.raises(ConnectConfigError, match=r"missing\.creds does not exist"):
        connect_options(settings, servers=parse_servers("h:1"), name="x", disable_tls=True, on_event=None)


def test_credentials_without_nkeys_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """nkeys comes with nats-py[nkeys]; the case of a machine without it is simulated here."""
    real_find_spec = importlib.util.find_spec

    def without_nkeys(name: str, *args: object) -> object:
        return None if name == "nkeys" else real_find_spec(name, *args)  # type: ignore[arg-type]

    creds = tmp_path / "user.creds"
    creds.write_text("not read here")
    settings = StandInSettings(nats_credentials=str(creds))
    assert "user_credentials" in connect_options(
        settings, servers=parse_servers("h:1"), name="x", disable_tls=True, on_event=None
    ), "with nkeys installed the credentials file is used"
    monkeypatch.setattr(importlib.util, "find_spec", without_nkeys)
    with pytest.raises(ConnectConfigError) as refused:
        connect_options(settings, servers=parse_servers("h:1"), name="x", disable_tls=True, on_event=None)
    assert (
        str(refused.value) == "plugin.nats.credentials needs the nkeys package: pip install 'nats-py[nkeys]'"
    )


# ---------------------------------------------------------------------------------------------
# real servers


async def round_trip(client: Client) -> None:
    """Prove the connection works end to end: a request answered by our own subscription."""

    async def echo(msg: nats.aio.msg.Msg) -> None:
        await msg.respond(msg.data)

    await client.subscribe("probe", cb=echo)
    assert (await client.request("probe", b"ping", timeout=2)).data == b"ping"


async def connect_for_a_while(
    settings: Settings, server: NatsServer, log: logging.Logger, seconds: float
) -> Client | None:
    """connect_with_backoff, given up (stop_event) after `seconds`."""
    options = connect_options(
        settings, servers=parse_servers([server.address]), name="t", disable_tls=False, on_event=None
    )
    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(seconds, stop.set)
    return await connect_with_backoff(options, log=log, initial=0.1, maximum=0.3, stop_event=stop)


@pytest.fixture
def mtls_server(nats_server_factory: Callable[..., NatsServer], pki: Pki) -> NatsServer:
    return nats_server_factory(jetstream=False, extra_config=pki.nats_server_tls_block())


async def test_mutual_tls_with_the_file_provider(mtls_server: NatsServer, pki: Pki) -> None:
    client = await connect_for_a_while(file_settings(pki), mtls_server, logging.getLogger("t"), 10)
    assert client is not None and client.is_connected
    await round_trip(client)
    await client.close()


async def test_mutual_tls_with_the_puppet_ssldir_layout(
    mtls_server: NatsServer, pki: Pki, tmp_path: Path
) -> None:
    ssldir = pki.puppet_ssldir(tmp_path / "ssl")
    settings = StandInSettings(security_provider="puppet", ssldir=str(ssldir), identity=pki.client_name)
    client = await connect_for_a_while(settings, mtls_server, logging.getLogger("t"), 10)
    assert client is not None and client.is_connected
    await round_trip(client)
    await client.close()


async def test_wrong_ca_fails_with_a_clear_error(
    mtls_server: NatsServer, pki: Pki, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    other_ca, _key = make_ca(tmp_path / "other", name="other")
    caplog.set_level(logging.WARNING, logger="wrong-ca")
    client = await connect_for_a_while(
        file_settings(pki, ca=other_ca), mtls_server, logging.getLogger("wrong-ca"), 1
    )
    assert client is None
    messages = [record.getMessage() for record in caplog.records if record.name == "wrong-ca"]
    assert len(messages) >= 2  # retried, one line per round
    assert (
        f"cannot connect to nats://{mtls_server.address}: TLS certificate verification failed" in messages[0]
    )
    assert "retrying in" in messages[0]


async def test_user_password_auth_and_password_never_logged(
    nats_server_factory: Callable[..., NatsServer], caplog: pytest.LogCaptureFixture
) -> None:
    server = nats_server_factory(
        jetstream=False, extra_config=f'authorization {{ user: "adapter", password: "{PASSWORD}" }}'
    )
    caplog.set_level(logging.DEBUG)
    events: list[tuple[str, str]] = []
    good = StandInSettings(nats_user="adapter", nats_password=PASSWORD)
    options = connect_options(
        good,
        servers=parse_servers([server.address]),
        name="t",
        disable_tls=True,
        on_event=lambda *e: events.append(e),
    )
    client = await connect_with_backoff(options, log=logging.getLogger("auth"))
    assert client is not None
    await round_trip(client)
    await client.close()

    bad = StandInSettings(nats_user="adapter", nats_password=PASSWORD + "-wrong")
    bad_options = connect_options(
        bad, servers=parse_servers([server.address]), name="t", disable_tls=True, on_event=None
    )
    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(0.8, stop.set)
    assert (
        await connect_with_backoff(bad_options, log=logging.getLogger("auth"), initial=0.1, stop_event=stop)
        is None
    )
    assert any("authorization violation" in record.getMessage() for record in caplog.records)
    assert PASSWORD not in caplog.text
    assert all(PASSWORD not in detail for _event, detail in events)


async def test_reconnects_after_a_server_restart_and_reports_events(
    nats_server_factory: Callable[..., NatsServer],
) -> None:
    server = nats_server_factory(jetstream=False)
    events: list[str] = []
    options = connect_options(
        StandInSettings(),
        servers=parse_servers([server.address]),
        name="t",
        disable_tls=True,
        on_event=lambda e, _d: events.append(e),
    )
    client = await connect_with_backoff(options, log=logging.getLogger("t"))
    assert client is not None
    await asyncio.to_thread(server.kill)
    await asyncio.sleep(0.5)
    await asyncio.to_thread(server.start)
    for _ in range(100):
        if EVENT_RECONNECTED in events:
            break
        await asyncio.sleep(0.05)
    assert events.index(EVENT_DISCONNECTED) < events.index(EVENT_RECONNECTED)
    await round_trip(client)
    await client.close()


async def test_first_connection_waits_for_a_late_server(
    nats_server_factory: Callable[..., NatsServer], caplog: pytest.LogCaptureFixture
) -> None:
    server = NatsServer(jetstream=False)  # port chosen, not started yet
    events: list[str] = []
    options = connect_options(
        StandInSettings(),
        servers=parse_servers([server.address]),
        name="t",
        disable_tls=True,
        on_event=lambda e, _d: events.append(e),
    )
    caplog.set_level(logging.WARNING, logger="late")
    asyncio.get_running_loop().call_later(0.6, server.start)
    try:
        client = await connect_with_backoff(options, log=logging.getLogger("late"), initial=0.1, maximum=0.2)
        assert client is not None and client.is_connected
        assert events == []  # failed first attempts are logged, not reported as connection events
        await client.close()
    finally:
        server.cleanup()
    assert any("connection refused" in record.getMessage() for record in caplog.records)
