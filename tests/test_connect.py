"""connect.py: server URLs, TLS files and contexts, options, and real connections (mTLS, auth, reconnect)."""

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
    redact_url,
    server_urls,
    tls_context,
    tls_files,
)
from tests.tlsutil import Pki, make_ca, make_pki

PASSWORD = "Sup3r-s3cret-pa55"  # distinctive, so a leak into logs is easy to find


@dataclasses.dataclass
class StandInSettings:
    """The connection-related fields of settings.Settings (a plain data object)."""

    identity: str = "adapter.example.net"
    certname: str = ""
    security_provider: str = "puppet"
    ssldir: str = "/etc/puppetlabs/puppet/ssl"
    file_certificate: str | None = None
    file_key: str | None = None
    file_ca: str | None = None
    choria_certificate: str | None = None
    choria_key: str | None = None
    choria_ca: str | None = None
    nats_user: str | None = None
    nats_password: str | None = None
    nats_credentials: str | None = None
    connect_timeout: float = 2.0


# ---------------------------------------------------------------------------------------------
# pure logic


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("broker.example.net:4222", "nats://broker.example.net:4222"),
        ("127.0.0.1:4222", "nats://127.0.0.1:4222"),
        ("[::1]:4222", "nats://[::1]:4222"),
        (" host:1 ", "nats://host:1"),
        ("nats://broker:4222", "nats://broker:4222"),
        ("tls://broker:4222", "tls://broker:4222"),
        ("nats://broker", "nats://broker"),
        ("nats://user:pw@broker:4222", "nats://user:pw@broker:4222"),
        ("nats://[::1]:4222", "nats://[::1]:4222"),
    ],
)
def test_server_urls_accepts(given: str, expected: str) -> None:
    assert server_urls([given]) == [expected]


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ("broker.example.net", "has no port: write host:port, e.g. broker.example.net:4222"),
        ("[::1]", "has no port"),
        ("::1:4222", "IPv6 addresses need brackets"),
        ("[::1:4222", "unterminated IPv6"),
        ("host:http", "is not a number"),
        ("host:70000", "is not a number"),
        (":4222", "has no host"),
        ("", "empty server address"),
        ("http://host:80", "scheme 'http'"),
        ("nats://host:abc", "is not a number"),
    ],
)
def test_server_urls_rejects_with_a_clear_message(given: str, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        server_urls([given])
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("nats://user:secret@host:4222", "nats://user:***@host:4222"),
        ("nats://token@host:4222", "nats://token:***@host:4222"),
        ("nats://host:4222", "nats://host:4222"),
        ("host:4222", "host:4222"),
    ],
)
def test_redact_url(url: str, expected: str) -> None:
    assert redact_url(url) == expected


def test_url_credentials_never_appear_in_server_errors() -> None:
    with pytest.raises(ValueError) as caught:
        server_urls(["nats://user:hunter2@host:http"])
    assert "hunter2" not in str(caught.value)


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


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        (
            StandInSettings(ssldir="/ssl"),
            (
                "/ssl/certs/adapter.example.net.pem",
                "/ssl/private_keys/adapter.example.net.pem",
                "/ssl/certs/ca.pem",
            ),
        ),
        (
            StandInSettings(ssldir="/ssl", certname="other.example.net"),
            (
                "/ssl/certs/other.example.net.pem",
                "/ssl/private_keys/other.example.net.pem",
                "/ssl/certs/ca.pem",
            ),
        ),
        (
            StandInSettings(security_provider="file", file_certificate="/c", file_key="/k", file_ca="/ca"),
            ("/c", "/k", "/ca"),
        ),
        (
            StandInSettings(
                security_provider="choria", choria_certificate="/v2c", choria_key="/v2k", choria_ca="/v2ca"
            ),
            ("/v2c", "/v2k", "/v2ca"),
        ),
    ],
)
def test_tls_files_per_provider(settings: StandInSettings, expected: tuple[str, str, str]) -> None:
    files = tls_files(settings)
    assert (files.certificate, files.key, files.ca) == expected


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (StandInSettings(security_provider="file", file_certificate="/c"), "plugin.security.file.key"),
        (
            StandInSettings(security_provider="choria", choria_key="/k"),
            "plugin.security.choria.certificate, plugin.security.choria.ca",
        ),
        (StandInSettings(security_provider="pkcs11"), "provider 'pkcs11'"),
        (StandInSettings(ssldir=""), "plugin.choria.ssldir"),
    ],
)
def test_tls_files_errors(settings: StandInSettings, message: str) -> None:
    with pytest.raises(ConnectConfigError, match=message):
        tls_files(settings)


def test_tls_context_disabled_and_missing_files(tmp_path: Path) -> None:
    settings = StandInSettings(ssldir=str(tmp_path))
    assert tls_context(settings, disable_tls=True) is None
    with pytest.raises(ConnectConfigError, match=f"{tmp_path}/certs/adapter.example.net.pem does not exist"):
        tls_context(settings, disable_tls=False)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def file_settings(pki: Pki, ca: Path | None = None) -> StandInSettings:
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
        settings, servers=["h:4222"], name="adapter x", disable_tls=False, on_event=None
    )
    assert options["servers"] == ["nats://h:4222"]
    assert (options["max_reconnect_attempts"], options["allow_reconnect"]) == (-1, True)
    assert (options["user"], options["password"], options["name"]) == ("adapter", PASSWORD, "adapter x")
    assert isinstance(options["tls"], ssl.SSLContext)
    assert options["connect_timeout"] == 2.0
    plain = connect_options(StandInSettings(), servers=["h:4222"], name="x", disable_tls=True, on_event=None)
    assert "tls" not in plain and "user" not in plain and "password" not in plain


def test_credentials_file_must_exist(tmp_path: Path) -> None:
    settings = StandInSettings(nats_credentials=str(tmp_path / "missing.creds"))
    with pytest.raises(ConnectConfigError, match=r"missing\.creds does not exist"):
        connect_options(settings, servers=["h:1"], name="x", disable_tls=True, on_event=None)


@pytest.mark.skipif(importlib.util.find_spec("nkeys") is not None, reason="nkeys is installed")
def test_credentials_without_nkeys_says_what_to_install(tmp_path: Path) -> None:
    creds = tmp_path / "user.creds"
    creds.write_text("not read here")
    settings = StandInSettings(nats_credentials=str(creds))
    with pytest.raises(ConnectConfigError, match="nkeys"):
        connect_options(settings, servers=["h:1"], name="x", disable_tls=True, on_event=None)


# ---------------------------------------------------------------------------------------------
# real servers


async def round_trip(client: Client) -> None:
    """Prove the connection works end to end: a request answered by our own subscription."""

    async def echo(msg: nats.aio.msg.Msg) -> None:
        await msg.respond(msg.data)

    await client.subscribe("probe", cb=echo)
    assert (await client.request("probe", b"ping", timeout=2)).data == b"ping"


async def connect_for_a_while(
    settings: StandInSettings, server: NatsServer, log: logging.Logger, seconds: float
) -> Client | None:
    """connect_with_backoff, given up (stop_event) after `seconds`."""
    options = connect_options(settings, servers=[server.address], name="t", disable_tls=False, on_event=None)
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
        good, servers=[server.address], name="t", disable_tls=True, on_event=lambda *e: events.append(e)
    )
    client = await connect_with_backoff(options, log=logging.getLogger("auth"))
    assert client is not None
    await round_trip(client)
    await client.close()

    bad = StandInSettings(nats_user="adapter", nats_password=PASSWORD + "-wrong")
    bad_options = connect_options(bad, servers=[server.address], name="t", disable_tls=True, on_event=None)
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
        servers=[server.address],
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
        servers=[server.address],
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
