"""Typed settings, defaults and every configuration error (docs/configuration.md, Adapter keys;
docs/configuration.md, Process keys)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from choria_broker_adapters.config.brokerconf import RawConfig, parse_text
from choria_broker_adapters.config.settings import ConfigError, Settings, build_settings, load_settings
from choria_broker_adapters.config.trust import tls_problems
from choria_broker_adapters.core.choices import protocol_version_for
from choria_broker_adapters.core.durations import parse_duration

FILE = "/etc/choria/broker.conf"
BASE = """\
identity = broker1.example.net
plugin.choria.middleware_hosts = nats1.example.net:4222
plugin.choria.adapters = node_data
plugin.choria.adapter.node_data.type = jetstream
plugin.choria.adapter.node_data.ingest.topic = choria.discovery
plugin.choria.adapter.node_data.ingest.protocol = request
"""


def build(text: str, environ: dict[str, str] | None = None) -> Settings:
    raw = RawConfig()
    raw.merge(*parse_text(text, file=FILE))
    return build_settings(raw, config_file=FILE, environ=environ or {}, default_identity="host.example.net")


def errors_of(text: str) -> list[tuple[int, str | None, str]]:
    with pytest.raises(ConfigError) as caught:
        build(text)
    assert all(issue.source and issue.source.file == FILE for issue in caught.value.issues)
    return [(issue.source.line, issue.key, issue.message) for issue in caught.value.issues if issue.source]


def test_go_defaults() -> None:
    adapter = build(BASE).adapters["node_data"]
    assert (adapter.queue_len, adapter.ingest_workers, adapter.stream_workers) == (1000, 10, 10)
    assert adapter.stream_topic == "node_data"
    assert adapter.stream_servers == ()
    assert adapter.stream_name == "CHORIA_NODE_DATA"
    assert adapter.stream_subjects == ("node_data",)
    assert adapter.stream_max_age == 7 * 86400
    assert adapter.sources["queue_len"] == "default"
    assert adapter.sources["ingest.topic"] == f"{FILE}:5"


def test_choria_provider_reads_its_tls_files_and_decodes_protocol_v2() -> None:
    settings = build(
        BASE
        + "plugin.security.provider = choria\nplugin.security.choria.certificate = /v2/cert.pem\n"
        + "plugin.security.choria.key = /v2/key.pem\nplugin.security.choria.ca = /v2/ca.pem\n"
    )
    assert protocol_version_for(settings.security_provider) == 2
    assert settings.tls_files() == {
        "certificate": ("/v2/cert.pem", "plugin.security.choria.certificate"),
        "key": ("/v2/key.pem", "plugin.security.choria.key"),
        "ca": ("/v2/ca.pem", "plugin.security.choria.ca"),
    }
    described = {key: (value, source) for key, value, source in settings.describe()}
    assert described["plugin.security.choria.ca"] == ("/v2/ca.pem", f"{FILE}:10")


def test_choria_provider_without_tls_files_is_a_tls_problem_only(tmp_path: Path) -> None:
    """Protocol v2 with --disable-tls needs no TLS files; with TLS, `run` and `check` name each."""
    cert = tmp_path / "cert.pem"
    cert.write_text("x")
    settings = build(
        BASE + f"plugin.security.provider = choria\nplugin.security.choria.certificate = {cert}\n"
    )
    assert [(problem.key, problem.message) for problem in tls_problems(settings)] == [
        (
            f"plugin.security.choria.{role}",
            f"the choria security provider needs the TLS {role}: set plugin.security.choria.{role} = <path> "
            "(needed unless --disable-tls)",
        )
        for role in ("key", "ca")
    ]


def test_ingest_protocol_defaults_to_reply() -> None:
    text = BASE.replace("plugin.choria.adapter.node_data.ingest.protocol = request\n", "")
    assert build(text).adapters["node_data"].ingest_protocol == "reply"


def test_broker_settings_and_provenance() -> None:
    settings = build(
        BASE
        + "loglevel = debug\nplugin.choria.stats_port = 8222\nplugin.security.provider = file\n"
        + "plugin.security.file.certificate = /c.pem\nplugin.security.file.key = /k.pem\n"
        + "plugin.security.file.ca = /ca.pem\nplugin.nats.user = u\nplugin.nats.pass = secret\n"
    )
    assert settings.identity == "broker1.example.net"
    assert settings.loglevel == "debug"
    assert settings.stats_port == 8222 and settings.stats_address == "127.0.0.1"
    assert settings.middleware_hosts == ("nats://nats1.example.net:4222",)
    assert settings.tls_files()["ca"] == ("/ca.pem", "plugin.security.file.ca")
    assert settings.sources["loglevel"] == f"{FILE}:7"
    assert "secret" not in repr(settings)
    assert all("secret" not in str(value) for _, value, _ in settings.describe())


MIDDLEWARE = [
    ("plugin.choria.middleware_hosts = a:4222, tls://b:4223\n", ("nats://a:4222", "tls://b:4223")),
    (
        "plugin.choria.broker_network = true\nplugin.choria.network.listen_address = ::\n",
        ("nats://127.0.0.1:4222",),
    ),
    (
        "plugin.choria.broker_network = true\nplugin.choria.network.listen_address = 10.0.0.5\n"
        "plugin.choria.network.client_port = 4333\n",
        ("nats://10.0.0.5:4333",),
    ),
    (
        "plugin.choria.broker_network = true\nplugin.choria.middleware_hosts = c:4222\n",
        ("nats://c:4222",),
    ),
    ("", ("nats://puppet:4222",)),
]


@pytest.mark.parametrize(("lines", "expected"), MIDDLEWARE)
def test_middleware_resolution_order(lines: str, expected: tuple[str, ...]) -> None:
    text = BASE.replace("plugin.choria.middleware_hosts = nats1.example.net:4222\n", "") + lines
    assert build(text).middleware_hosts == expected


def test_puppet_provider_paths_follow_identity_and_certname() -> None:
    text = BASE + "plugin.choria.ssldir = /ssl\n"
    files = build(text).tls_files()
    assert files["certificate"][0] == "/ssl/certs/broker1.example.net.pem"
    assert files["key"][0] == "/ssl/private_keys/broker1.example.net.pem"
    assert files["ca"][0] == "/ssl/certs/ca.pem"
    files = build(text, {"MCOLLECTIVE_CERTNAME": "other.example.net"}).tls_files()
    assert files["certificate"][0] == "/ssl/certs/other.example.net.pem"


def test_nats_credentials_from_environment_only_when_key_present() -> None:
    env = {"MCOLLECTIVE_NATS_PASSWORD": "from-env", "MCOLLECTIVE_NATS_USERNAME": "envuser"}
    assert build(BASE, env).nats_password is None
    settings = build(BASE + "plugin.nats.user = u\nplugin.nats.pass = p\n", env)
    assert (settings.nats_user, settings.nats_password) == ("envuser", "from-env")


A = "plugin.choria.adapter.node_data."

# (extra or replaced lines, expected line, expected key, words in the message)
ERRORS = [
    (BASE.replace(f"{A}type = jetstream\n", ""), 3, f"{A}type", f"set {A}type = choria_streams"),
    (BASE.replace("jetstream", "kafka"), 4, f"{A}type", "expected one of choria_streams, jetstream"),
    (BASE.replace("jetstream", "jetstraem"), 4, f"{A}type", "did you mean jetstream"),
    (BASE.replace("jetstream", "nats_stream"), 4, f"{A}type", "deprecated"),
    (BASE + f"{A}ingest.workers = ten\n", 7, f"{A}ingest.workers", "'ten' is not a whole number"),
    (BASE + f"{A}ingest.workers = 0\n", 7, f"{A}ingest.workers", "from 1 to 100"),
    (BASE + f"{A}stream.workers = 101\n", 7, f"{A}stream.workers", "from 1 to 100"),
    (BASE + f"{A}queue_len = 1_000\n", 7, f"{A}queue_len", "not a whole number"),
    (BASE + f"{A}queue_len = -5\n", 7, f"{A}queue_len", "out of range"),
    (BASE.replace(f"{A}ingest.topic = choria.discovery\n", ""), 3, f"{A}ingest.topic", "no ingest topic"),
    (BASE.replace("= request", "= Request"), 6, f"{A}ingest.protocol", "expected one of request, reply"),
    (BASE + f"{A}stream.servers = js1.example.net\n", 7, f"{A}stream.servers", "the port is required"),
    (BASE + f"{A}stream.servers = a:4222,,b:4222\n", 7, f"{A}stream.servers", "empty entry"),
    (
        BASE.replace("adapters = node_data", "adapters = node data"),
        3,
        "plugin.choria.adapters",
        "not allowed",
    ),
    (
        BASE.replace("adapters = node_data", "adapters = node_data,"),
        3,
        "plugin.choria.adapters",
        "empty adapter",
    ),
    (BASE.replace("plugin.choria.adapters = node_data\n", ""), 0, "plugin.choria.adapters", "no adapters"),
    (BASE + f"{A}stream.topic = choria.node_metadata.>\n", 7, f"{A}stream.topic", "wildcard"),
    (BASE + f"{A}stream.topic = a.%s.b\n", 7, f"{A}stream.subjects", "set stream.subjects explicitly"),
    (BASE + f"{A}stream.topic = %s\n", 7, f"{A}stream.subjects", "would capture every subject"),
    (BASE + f"{A}stream.max_age = a week\n", 7, f"{A}stream.max_age", "not a duration"),
    (BASE + f"{A}stream.storage = disk\n", 7, f"{A}stream.storage", "expected one of file, memory"),
    (BASE + "loglevel = verbose\n", 7, "loglevel", "expected one of debug, info"),
    (BASE + "plugin.choria.stats_port = 8222x\n", 7, "plugin.choria.stats_port", "not a whole number"),
    (BASE + "plugin.security.provider = pkcs11\n", 7, "plugin.security.provider", "does not support"),
    (BASE + "plugin.security.provider = file\n", 0, "plugin.security.file.certificate", "needs the TLS"),
    (BASE + f"{A}stream.type = choria_streams\n", 7, f"{A}stream.type", "disagrees with"),
    (BASE + f"{A}stream.name = CHORIA.NODE\n", 7, f"{A}stream.name", "not a valid JetStream stream name"),
    (BASE + f"{A}stream.subjects = a.>.b\n", 7, f"{A}stream.subjects", "'>' may only be the last token"),
    (BASE + f"{A}stream.replicas = 0\n", 7, f"{A}stream.replicas", "from 1 to 5"),
    (BASE + f"{A}stream.servers = http://js1:4222\n", 7, f"{A}stream.servers", "expected nats:// or tls://"),
    (
        BASE + f"{A}stream.servers = nats://a:one@h1:4222, nats://a:two@h2:4222\n",
        7,
        f"{A}stream.servers",
        "different credentials",
    ),
]


@pytest.mark.parametrize(("text", "line", "key", "words"), ERRORS)
def test_errors_name_file_line_key_and_expectation(text: str, line: int, key: str, words: str) -> None:
    errors = errors_of(text)
    assert any(n == line and k == key and words in m for n, k, m in errors), errors


def test_all_errors_are_reported_in_one_run() -> None:
    text = BASE + f"{A}ingest.workers = ten\n{A}stream.workers = 0\n{A}queue_len = x\nloglevel = loud\n"
    keys = {key for _, key, _ in errors_of(text)}
    assert {f"{A}ingest.workers", f"{A}stream.workers", f"{A}queue_len", "loglevel"} <= keys


def test_error_message_lists_every_problem() -> None:
    with pytest.raises(ConfigError) as caught:
        build(BASE + f"{A}ingest.workers = ten\n")
    assert f"{FILE}:7: {A}ingest.workers: 'ten' is not a whole number" in str(caught.value)


def test_type_inside_stream_is_accepted_with_a_warning() -> None:
    text = BASE.replace(f"{A}type = jetstream\n", f"{A}stream.type = choria_streams\n")
    settings = build(text)
    assert settings.adapters["node_data"].type == "choria_streams"
    warning = next(w for w in settings.warnings if w.key == f"{A}stream.type")
    assert warning.source.line == 4
    assert f"write {A}type = choria_streams instead" in warning.message


def test_unknown_key_warns_with_did_you_mean() -> None:
    settings = build(BASE + f"{A}ingest.worker = 5\n")
    warning = next(w for w in settings.warnings if w.key == f"{A}ingest.worker")
    assert warning.source.line == 7
    assert f"did you mean {A}ingest.workers?" in warning.message
    assert settings.adapters["node_data"].ingest_workers == 10


def test_settings_for_unlisted_adapter_warn() -> None:
    settings = build(BASE + "plugin.choria.adapter.other.type = jetstream\n")
    assert any(
        w.key == "plugin.choria.adapter.other.type" and "does not list" in w.message
        for w in settings.warnings
    )


def test_short_duplicate_window_warns() -> None:
    settings = build(BASE + f"{A}stream.duplicate_window = 30s\n")
    assert any(w.key == f"{A}stream.duplicate_window" for w in settings.warnings)


DURATIONS = [
    ("30", 30.0),
    ("5s", 5.0),
    ("300ms", 0.3),
    ("1h30m", 5400.0),
    ("1w", 604800.0),
    ("2d", 172800.0),
    ("1.5M", 1.5 * 30 * 86400),
    ("1y", 365 * 86400.0),
]


@pytest.mark.parametrize(("text", "seconds"), DURATIONS)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "s", "5x", "1h 30m", "-", "1..5s", "w"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_load_settings_names_an_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(tmp_path / "missing.conf", environ={})
    assert "cannot read the configuration file" in str(caught.value)
    assert str(tmp_path / "missing.conf") in str(caught.value)


KEYS = [
    "identity",
    "plugin.choria.adapters",
    f"{A}type",
    f"{A}ingest.topic",
    f"{A}ingest.workers",
    f"{A}queue_len",
    f"{A}stream.servers",
    f"{A}stream.type",
    "plugin.choria.stats_port",
    "plugin.security.provider",
]


@hypothesis_settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=500))
def test_arbitrary_bytes_give_settings_or_config_error(data: bytes) -> None:
    raw = RawConfig()
    raw.merge(*parse_text(data, file=FILE))
    try:
        build_settings(raw, config_file=FILE, environ={}, default_identity="h.example.net")
    except ConfigError as error:
        assert error.issues


@hypothesis_settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(KEYS), st.text(max_size=30)), max_size=12))
def test_mutated_configs_give_settings_or_config_error_with_file_and_line(
    lines: list[tuple[str, str]],
) -> None:
    text = BASE + "".join(f"{key} = {value}\n" for key, value in lines)
    try:
        build(text)
    except ConfigError as error:
        assert error.issues
        for issue in error.issues:
            assert issue.source is not None and issue.source.file == FILE and issue.key
