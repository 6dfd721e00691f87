"""The Python renderer alone: layout, ordering, defaults and the checks mirroring the Puppet types.

tests/test_puppet_render.py proves these bytes equal Puppet's; here the rules themselves are
pinned down in tables, fast and without Puppet.
"""

from __future__ import annotations

from typing import Any

import pytest

from choria_broker_adapters.config.render import (
    RenderError,
    adapter_blocks,
    package_file_version,
    render_broker_config,
)

P = "choria::broker::"
NODE_DATA: dict[str, Any] = {"type": "choria_streams", "ingest": {"topic": "choria.discovery"}}


def with_adapter(**adapter: Any) -> dict[str, Any]:
    return {f"{P}identity": "b1.example.net", f"{P}adapters": {"node_data": {**NODE_DATA, **adapter}}}


def test_a_complete_file_byte_for_byte() -> None:
    data = {
        f"{P}identity": "broker1.example.net",
        f"{P}middleware_hosts": ["nats1.example.net:4222", "tls://nats2.example.net:4222"],
        f"{P}ssldir": "/etc/puppetlabs/puppet/ssl",
        f"{P}adapters": {
            "replies": {
                "type": "jetstream",
                "ingest": {"topic": "choria.reply.>"},
                "stream": {"servers": []},
            },
            "node_data": {
                "stream": {"type": "choria_streams", "topic": "choria.node_metadata.%s", "workers": 10},
                "ingest": {"topic": "choria.discovery", "protocol": "request", "workers": 10},
            },
        },
    }
    assert render_broker_config(data) == (
        "# choria-broker-adapters configuration, in the Choria broker's broker.conf format.\n"
        "# Written by Puppet (class choria::broker) or by `choria-broker-adapters render`;\n"
        "# local changes are overwritten.\n"
        "\n"
        "identity = broker1.example.net\n"
        "logfile = stdout\n"
        "loglevel = info\n"
        "\n"
        "# Metrics and status: /choria/, /choria/prometheus and /choria/metrics\n"
        "plugin.choria.stats_address = 127.0.0.1\n"
        "plugin.choria.stats_port = 8223\n"
        "\n"
        "# NATS servers of the Choria network\n"
        "plugin.choria.middleware_hosts = nats1.example.net:4222, tls://nats2.example.net:4222\n"
        "\n"
        "# TLS and message security\n"
        "plugin.security.provider = puppet\n"
        "plugin.choria.ssldir = /etc/puppetlabs/puppet/ssl\n"
        "\n"
        "# Protocol adapters\n"
        "plugin.choria.adapters = node_data, replies\n"
        "\n"
        "# Adapter node_data\n"
        "plugin.choria.adapter.node_data.type = choria_streams\n"
        "plugin.choria.adapter.node_data.ingest.protocol = request\n"
        "plugin.choria.adapter.node_data.ingest.topic = choria.discovery\n"
        "plugin.choria.adapter.node_data.ingest.workers = 10\n"
        "plugin.choria.adapter.node_data.stream.topic = choria.node_metadata.%s\n"
        "plugin.choria.adapter.node_data.stream.workers = 10\n"
        "\n"
        "# Adapter replies\n"
        "plugin.choria.adapter.replies.type = jetstream\n"
        "plugin.choria.adapter.replies.ingest.topic = choria.reply.>\n"
    )


def test_no_adapters_and_no_optional_header_lines() -> None:
    text = render_broker_config({f"{P}stats_port": 0})
    assert text.endswith(
        "\nlogfile = stdout\nloglevel = info\n\n"
        "# TLS and message security\nplugin.security.provider = puppet\n\n"
        "# No protocol adapters configured (choria::broker::adapters is empty)\n"
    )
    assert "identity" not in text.split("local changes are overwritten.", 1)[1]


CHORIA_V2: dict[str, Any] = {
    f"{P}security_provider": "choria",
    f"{P}issuers": {"org": "c6a3b6e3" * 8, "choria": "0123456789abcdef" * 4},
    f"{P}choria_certificate": "/etc/choria/tls/cert.pem",
    f"{P}choria_key": "/etc/choria/tls/key.pem",
    f"{P}choria_ca": "/etc/choria/tls/ca.pem",
}


def test_choria_provider_lines() -> None:
    text = render_broker_config(CHORIA_V2)
    assert (
        "# TLS and message security\n"
        "plugin.security.provider = choria\n"
        "plugin.security.issuer.names = choria, org\n"
        f"plugin.security.issuer.choria.public = {'0123456789abcdef' * 4}\n"
        f"plugin.security.issuer.org.public = {'c6a3b6e3' * 8}\n"
        "plugin.security.choria.certificate = /etc/choria/tls/cert.pem\n"
        "plugin.security.choria.key = /etc/choria/tls/key.pem\n"
        "plugin.security.choria.ca = /etc/choria/tls/ca.pem\n"
        "\n"
    ) in text
    assert "ssldir" not in text and "plugin.security.file" not in text


@pytest.mark.parametrize(
    ("file_name", "version"),
    [
        ("choria_broker_adapters-0.1.0-py3-none-any.whl", "0.1.0"),
        ("choria_broker_adapters-1.2.0rc1-1-py3-none-any.whl", "1.2.0rc1"),
        ("choria_broker_adapters-0.1.0.tar.gz", "0.1.0"),
        ("choria-broker-adapters-0.1.0.zip", "0.1.0"),
        ("choria_broker_adapters-0.1.0.whl", None),
        ("nats_py-2.16.0-py3-none-any.whl", None),
    ],
)
def test_package_file_version(file_name: str, version: str | None) -> None:
    assert package_file_version(file_name) == version


def test_file_provider_lines() -> None:
    text = render_broker_config(
        {
            f"{P}security_provider": "file",
            f"{P}file_certificate": "/c.pem",
            f"{P}file_key": "/k.pem",
            f"{P}file_ca": "/ca.pem",
            f"{P}ssldir": "/ignored/with/the/file/provider",
        }
    )
    assert (
        "plugin.security.provider = file\nplugin.security.file.certificate = /c.pem\n"
        "plugin.security.file.key = /k.pem\nplugin.security.file.ca = /ca.pem\n"
    ) in text
    assert "ssldir" not in text


@pytest.mark.parametrize(
    ("adapter", "expected"),
    [
        ({}, [("type", "choria_streams"), ("ingest.topic", "choria.discovery")]),
        (
            {"stream": {"type": "jetstream", "topic": "t"}},
            [("type", "jetstream"), ("ingest.topic", "choria.discovery"), ("stream.topic", "t")],
        ),
        (
            {"stream": {"servers": ["a:1", "b:2"], "subjects": ["x.>"], "workers": 3}, "queue_len": 5},
            [
                ("type", "choria_streams"),
                ("ingest.topic", "choria.discovery"),
                ("queue_len", "5"),
                ("stream.servers", "a:1, b:2"),
                ("stream.subjects", "x.>"),
                ("stream.workers", "3"),
            ],
        ),
        (
            {"stream": {"servers": []}},
            [("type", "choria_streams"), ("ingest.topic", "choria.discovery")],
        ),
        (
            {"shutdown_grace": 30, "stream": {"max_msgs_per_subject": -1, "max_age": "1.5d"}},
            [
                ("type", "choria_streams"),
                ("ingest.topic", "choria.discovery"),
                ("shutdown_grace", "30"),
                ("stream.max_age", "1.5d"),
                ("stream.max_msgs_per_subject", "-1"),
            ],
        ),
    ],
    ids=["minimal", "type-inside-stream", "arrays-and-sorting", "empty-array-left-out", "numbers"],
)
def test_adapter_lines(adapter: dict[str, Any], expected: list[tuple[str, str]]) -> None:
    adapter = {**NODE_DATA, **adapter}
    if "type" in adapter.get("stream", {}):
        del adapter["type"]
    assert adapter_blocks({"node_data": adapter}) == [("node_data", expected)]


def test_adapters_sorted_by_code_point_like_puppet() -> None:
    names = ["alpha", "Zeta", "B-2", "a_1", "_x", "9"]
    blocks = adapter_blocks({name: NODE_DATA for name in names})
    assert [name for name, _ in blocks] == ["9", "B-2", "Zeta", "_x", "a_1", "alpha"]


# (case id, data, key named, words in the message)
BAD: list[tuple[str, dict[str, Any], str, str]] = [
    ("type-enum", with_adapter(type="nats_stream"), f"{P}adapters.node_data.type", "'nats_stream'"),
    ("type-case", with_adapter(type="JetStream"), f"{P}adapters.node_data.type", "expects one of"),
    (
        "type-missing",
        {f"{P}adapters": {"x": {"ingest": {"topic": "a"}}}},
        f"{P}adapters.x.type",
        "expects a value",
    ),
    (
        "undef-optional-key",
        with_adapter(queue_len=None),
        f"{P}adapters.node_data.queue_len",
        "got nothing (undef)",
    ),
    ("undef-type", with_adapter(type=None), f"{P}adapters.node_data.type", "got nothing (undef)"),
    (
        "types-disagree",
        with_adapter(type="jetstream", stream={"type": "choria_streams"}),
        f"{P}adapters.node_data.type",
        "'jetstream' disagrees with stream.type 'choria_streams'",
    ),
    (
        "ingest-workers-0",
        with_adapter(ingest={"topic": "a", "workers": 0}),
        f"{P}adapters.node_data.ingest.workers",
        "Integer[1, 100]",
    ),
    (
        "stream-workers-101",
        with_adapter(stream={"workers": 101}),
        f"{P}adapters.node_data.stream.workers",
        "got 101",
    ),
    (
        "quoted-workers",
        with_adapter(stream={"workers": "10"}),
        f"{P}adapters.node_data.stream.workers",
        "quoted number",
    ),
    (
        "bool-workers",
        with_adapter(stream={"workers": True}),
        f"{P}adapters.node_data.stream.workers",
        "Boolean",
    ),
    (
        "float-workers",
        with_adapter(stream={"workers": 1.5}),
        f"{P}adapters.node_data.stream.workers",
        "float",
    ),
    ("quoted-queue-len", with_adapter(queue_len="1000"), f"{P}adapters.node_data.queue_len", "quoted number"),
    ("queue-len-0", with_adapter(queue_len=0), f"{P}adapters.node_data.queue_len", "Integer[1, 10000000]"),
    (
        "newline-topic",
        with_adapter(ingest={"topic": "a\nb = c"}),
        f"{P}adapters.node_data.ingest.topic",
        "Choria::Subject",
    ),
    (
        "cr-topic",
        with_adapter(stream={"topic": "a\rb"}),
        f"{P}adapters.node_data.stream.topic",
        "Choria::Subject",
    ),
    (
        "space-topic",
        with_adapter(stream={"topic": "a b"}),
        f"{P}adapters.node_data.stream.topic",
        "without whitespace",
    ),
    (
        "empty-topic",
        with_adapter(ingest={"topic": ""}),
        f"{P}adapters.node_data.ingest.topic",
        "Choria::Subject",
    ),
    (
        "ingest-missing",
        {f"{P}adapters": {"x": {"type": "jetstream"}}},
        f"{P}adapters.x.ingest",
        "expects a value",
    ),
    (
        "topic-missing",
        with_adapter(ingest={"protocol": "request"}),
        f"{P}adapters.node_data.ingest.topic",
        "expects a value",
    ),
    (
        "protocol-enum",
        with_adapter(ingest={"topic": "a", "protocol": "Request"}),
        f"{P}adapters.node_data.ingest.protocol",
        "'Request'",
    ),
    (
        "unknown-stream-key",
        with_adapter(stream={"topc": "a"}),
        f"{P}adapters.node_data.stream.topc",
        "unrecognized key",
    ),
    ("unknown-adapter-key", with_adapter(workers=1), f"{P}adapters.node_data.workers", "unrecognized key"),
    (
        "server-no-port",
        with_adapter(stream={"servers": ["js1:4222", "js2"]}),
        f"{P}adapters.node_data.stream.servers[1]",
        "Choria::Server",
    ),
    (
        "server-port-range",
        with_adapter(stream={"servers": ["js1:65536"]}),
        f"{P}adapters.node_data.stream.servers[0]",
        "Choria::Server",
    ),
    (
        "server-scheme",
        with_adapter(stream={"servers": ["ws://js1:80"]}),
        f"{P}adapters.node_data.stream.servers[0]",
        "Choria::Server",
    ),
    (
        "servers-not-array",
        with_adapter(stream={"servers": "js1:4222"}),
        f"{P}adapters.node_data.stream.servers",
        "an Array",
    ),
    (
        "subjects-empty",
        with_adapter(stream={"subjects": []}),
        f"{P}adapters.node_data.stream.subjects",
        "at least 1",
    ),
    (
        "stream-name",
        with_adapter(stream={"name": "CHORIA.X"}),
        f"{P}adapters.node_data.stream.name",
        "Choria::StreamName",
    ),
    (
        "storage-enum",
        with_adapter(stream={"storage": "disk"}),
        f"{P}adapters.node_data.stream.storage",
        "'disk'",
    ),
    (
        "replicas-6",
        with_adapter(stream={"replicas": 6}),
        f"{P}adapters.node_data.stream.replicas",
        "Integer[1, 5]",
    ),
    (
        "max-msgs-0",
        with_adapter(stream={"max_msgs_per_subject": 0}),
        f"{P}adapters.node_data.stream.max_msgs_per_subject",
        "-1 (unlimited)",
    ),
    (
        "max-pending-big",
        with_adapter(stream={"max_pending": 65537}),
        f"{P}adapters.node_data.stream.max_pending",
        "Integer[1, 65536]",
    ),
    (
        "duration-quoted-number",
        with_adapter(stream={"max_age": "30"}),
        f"{P}adapters.node_data.stream.max_age",
        "Choria::Duration",
    ),
    (
        "duration-negative",
        with_adapter(shutdown_grace=-1),
        f"{P}adapters.node_data.shutdown_grace",
        "Choria::Duration",
    ),
    (
        "duration-unit",
        with_adapter(stream={"ack_timeout": "5 s"}),
        f"{P}adapters.node_data.stream.ack_timeout",
        "Choria::Duration",
    ),
    ("adapter-name-space", {f"{P}adapters": {"node data": NODE_DATA}}, f"{P}adapters", "'node data'"),
    ("adapter-name-dot", {f"{P}adapters": {"node.data": NODE_DATA}}, f"{P}adapters", "Choria::Name"),
    ("adapter-name-int", {f"{P}adapters": {7: NODE_DATA}}, f"{P}adapters", "Choria::Name"),
    ("adapters-not-hash", {f"{P}adapters": ["node_data"]}, f"{P}adapters", "Hash"),
    (
        "identity-newline",
        {f"{P}identity": "a\nplugin.choria.adapters = evil"},
        f"{P}identity",
        "Choria::SingleLine",
    ),
    ("identity-trailing-space", {f"{P}identity": "a "}, f"{P}identity", "Choria::SingleLine"),
    ("log-level", {f"{P}log_level": "verbose"}, f"{P}log_level", "'verbose'"),
    ("log-file-relative", {f"{P}log_file": "choria.log"}, f"{P}log_file", "absolute path"),
    ("stats-port-quoted", {f"{P}stats_port": "8222"}, f"{P}stats_port", "quoted number"),
    ("stats-port-range", {f"{P}stats_port": 70000}, f"{P}stats_port", "Integer[0, 65535]"),
    ("middleware-bad", {f"{P}middleware_hosts": ["nats1"]}, f"{P}middleware_hosts[0]", "Choria::Server"),
    ("ssldir-relative", {f"{P}ssldir": "ssl"}, f"{P}ssldir", "Choria::Path"),
    ("provider-enum", {f"{P}security_provider": "pkcs11"}, f"{P}security_provider", "'pkcs11'"),
    (
        "choria-provider-no-key",
        {**CHORIA_V2, f"{P}choria_key": None},
        f"{P}choria_key",
        "security_provider is 'choria'",
    ),
    (
        "choria-provider-no-issuer",
        {**CHORIA_V2, f"{P}issuers": {}},
        f"{P}issuers",
        "at least one issuer",
    ),
    ("issuers-without-choria", {f"{P}issuers": {"org": "ab" * 32}}, f"{P}issuers", "not 'puppet'"),
    ("issuer-key-short", {**CHORIA_V2, f"{P}issuers": {"org": "ab"}}, f"{P}issuers.org", "Choria::IssuerKey"),
    ("issuer-name-dot", {**CHORIA_V2, f"{P}issuers": {"o.rg": "ab" * 32}}, f"{P}issuers", "Choria::Name"),
    ("package-ensure", {f"{P}package_ensure": "v1.0"}, f"{P}package_ensure", "'v1.0'"),
    ("package-source-ftp", {f"{P}package_source": "ftp://x"}, f"{P}package_source", "index URL"),
    (
        "package-source-not-ours",
        {f"{P}package_source": "/srv/wheels/other-1.0-py3-none-any.whl"},
        f"{P}package_source",
        "not a choria-broker-adapters wheel",
    ),
    (
        "package-source-other-version",
        {
            f"{P}package_source": "/srv/wheels/choria_broker_adapters-0.2.0-py3-none-any.whl",
            f"{P}package_ensure": "0.1.0",
        },
        f"{P}package_ensure",
        "disagrees with choria_broker_adapters-0.2.0-py3-none-any.whl, which holds 0.2.0",
    ),
    ("limit-nofile-low", {f"{P}limit_nofile": 100}, f"{P}limit_nofile", "Integer[1024]"),
    (
        "file-provider-no-ca",
        {f"{P}security_provider": "file", f"{P}file_certificate": "/c", f"{P}file_key": "/k"},
        f"{P}file_ca",
        "security_provider is 'file'",
    ),
    ("not-optional-undef", {f"{P}log_level": None}, f"{P}log_level", "expects a value"),
    ("manage-service-string", {f"{P}manage_service": "false"}, f"{P}manage_service", "Boolean"),
    ("unknown-class-key", {f"{P}loglevel": "info"}, f"{P}loglevel", "unknown key"),
    ("interpolation", {f"{P}identity": "%{trusted.certname}"}, f"{P}identity", "interpolation"),
    ("data-not-hash", ["x"], "data", "Hash"),  # type: ignore[list-item]
]


@pytest.mark.parametrize(("data", "key", "words"), [case[1:] for case in BAD], ids=[case[0] for case in BAD])
def test_bad_data_names_the_key(data: dict[str, Any], key: str, words: str) -> None:
    with pytest.raises(RenderError) as raised:
        render_broker_config(data)
    assert raised.value.key == key
    assert words in raised.value.message
    assert str(raised.value) == f"{key}: {raised.value.message}"


@pytest.mark.parametrize(
    "data",
    [
        with_adapter(stream={"max_age": "1h30m", "ack_timeout": "300ms", "duplicate_window": 0}),
        with_adapter(stream={"max_age": "2Y", "retry_budget": "1.5M", "max_msgs_per_subject": 1}),
        with_adapter(stream={"servers": ["[2001:db8::1]:4222", "nats://a.b:0", "tls://c:65535"]}),
        with_adapter(ingest={"topic": "choria.reply.>", "protocol": "reply", "workers": 100}),
        {f"{P}identity": None, f"{P}ssldir": None, "ntp::servers": ["x"], "lookup_options": {}},
        {f"{P}log_file": "/var/log/choria/adapters.log", f"{P}manage_service": False, f"{P}ensure": "absent"},
    ],
    ids=["go-durations", "long-durations", "server-forms", "reply-100-workers", "undef-and-foreign", "misc"],
)
def test_good_data_renders(data: dict[str, Any]) -> None:
    text = render_broker_config(data)
    assert "\n\n\n" not in text
    assert text.endswith("\n") and not text.endswith("\n\n")


def test_only_content_parameters_change_the_file() -> None:
    """config_file, ensure and the service keys are Puppet's business, not the file's."""
    base = render_broker_config(with_adapter())
    assert base == render_broker_config(
        {
            **with_adapter(),
            f"{P}config_file": "/etc/choria/other.conf",
            f"{P}manage_service": False,
            f"{P}service_name": "adapters",
            f"{P}executable": "/opt/cba/bin/choria-broker-adapters",
        }
    )
