"""Every rendered file parses back into exactly the settings its data described.

The expected settings are worked out here from the data and the documented defaults
(notes: queue_len 1000, workers 10, stream.topic = NAME, ...), independently of both the
renderer and the settings code, then compared with `load_settings` on the rendered file.
tests/test_puppet_render.py shows Puppet writes the same bytes, so this holds for Puppet too.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from choria_broker_adapters.config.render import render_broker_config
from choria_broker_adapters.config.settings import ConfigError, load_settings

DATA = Path(__file__).parent / "data" / "render"
P = "choria::broker::"
DATA_SETS = sorted(path.stem for path in DATA.glob("*.yaml") if path.stem != "minimal_defaults")

_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}
_LONG_UNIT_SECONDS = {"w": 604800, "d": 86400, "M": 30 * 86400, "Y": 365 * 86400}


def seconds(duration: int | str) -> float:
    if isinstance(duration, int):
        return float(duration)
    if duration[-1] in _LONG_UNIT_SECONDS:
        return float(duration[:-1]) * _LONG_UNIT_SECONDS[duration[-1]]
    parts = re.findall(r"([0-9.]+)(ns|us|ms|s|m|h)", duration)
    assert "".join(number + unit for number, unit in parts) == duration
    return sum(float(number) * _UNIT_SECONDS[unit] for number, unit in parts)


def url(server: str) -> str:
    return server if "://" in server else f"nats://{server}"


def expected_adapter(name: str, adapter: dict[str, Any]) -> dict[str, Any]:
    stream = adapter.get("stream") or {}
    ingest = adapter["ingest"]
    topic = stream.get("topic", name)
    if "subjects" in stream:
        subjects = tuple(stream["subjects"])
    elif topic.endswith(".%s"):
        subjects = (topic[:-2] + ">",)
    else:
        assert "%s" not in topic, "give stream.subjects in the data set"
        subjects = (topic,)
    return {
        "name": name,
        "type": adapter.get("type") or stream["type"],
        "queue_len": adapter.get("queue_len", 1000),
        "shutdown_grace": seconds(adapter.get("shutdown_grace", 10)),
        "ingest_topic": ingest["topic"],
        "ingest_protocol": ingest.get("protocol", "reply"),
        "ingest_workers": ingest.get("workers", 10),
        "ingest_verify": ingest.get("verify", "off"),
        "ingest_verify_ca": ingest.get("verify_ca"),
        "stream_topic": topic,
        "stream_workers": stream.get("workers", 10),
        "stream_servers": tuple(url(server) for server in stream.get("servers", [])),
        "stream_ack_timeout": seconds(stream.get("ack_timeout", 5)),
        "stream_retry_budget": seconds(stream.get("retry_budget", 60)),
        "stream_max_pending": stream.get("max_pending", 512),
        "stream_publish": stream.get("publish", "auto"),
        "stream_name": stream.get("name", "CHORIA_" + name.upper().replace("-", "_")),
        "stream_subjects": subjects,
        "stream_max_age": seconds(stream.get("max_age", "1w")),
        "stream_storage": stream.get("storage", "file"),
        "stream_replicas": stream.get("replicas", 1),
        "stream_max_msgs_per_subject": stream.get("max_msgs_per_subject", -1),
        "stream_duplicate_window": seconds(stream.get("duplicate_window", "2m")),
    }


def render_to(tmp_path: Path, data: dict[str, Any]) -> Path:
    path = tmp_path / "etc" / "broker.conf"
    path.parent.mkdir()
    path.write_text(render_broker_config(data))
    return path


@pytest.mark.parametrize("name", DATA_SETS)
def test_rendered_file_parses_back_into_the_described_settings(tmp_path: Path, name: str) -> None:
    data = yaml.safe_load((DATA / f"{name}.yaml").read_text())
    given = {key.removeprefix(P): value for key, value in data.items() if key.startswith(P)}
    settings = load_settings(render_to(tmp_path, data), environ={})

    assert settings.identity == given["identity"]
    assert settings.logfile == given.get("log_file", "stdout")
    assert settings.loglevel == given.get("log_level", "info")
    assert settings.stats_port == given.get("stats_port", 8223)
    if settings.stats_port:
        assert settings.stats_address == given.get("stats_address", "127.0.0.1")
    hosts = given.get("middleware_hosts", [])
    # No hosts: the runtime's documented fallback, with a warning that says so.
    assert settings.middleware_hosts == (tuple(url(h) for h in hosts) if hosts else ("nats://puppet:4222",))
    assert settings.security_provider == given.get("security_provider", "puppet")
    if settings.security_provider == "file":
        files = (settings.file_certificate, settings.file_key, settings.file_ca)
        assert files == (given["file_certificate"], given["file_key"], given["file_ca"])
    elif settings.security_provider == "choria":
        assert settings.protocol_version == 2
        files = (settings.choria_certificate, settings.choria_key, settings.choria_ca)
        assert files == (given["choria_certificate"], given["choria_key"], given["choria_ca"])
    elif "ssldir" in given:
        assert settings.ssldir == given["ssldir"]

    assert list(settings.adapters) == sorted(given["adapters"])
    for adapter_name, adapter in given["adapters"].items():
        actual = settings.adapters[adapter_name]
        expected = expected_adapter(adapter_name, adapter)
        assert {field: getattr(actual, field) for field in expected} == expected

    # Nothing the renderer writes should surprise the parser (an unknown key, stream.type, ...).
    warned_keys = {warning.key for warning in settings.warnings}
    assert warned_keys <= ({"plugin.choria.middleware_hosts"} if not hosts else set()), settings.warnings


def test_no_adapters_is_refused_by_the_runtime_naming_the_key(tmp_path: Path) -> None:
    """The module default (no adapters) renders a file the runtime rejects, as the Go broker does."""
    data = yaml.safe_load((DATA / "minimal_defaults.yaml").read_text())
    with pytest.raises(ConfigError) as raised:
        load_settings(render_to(tmp_path, data), environ={})
    assert [issue.key for issue in raised.value.issues] == ["plugin.choria.adapters"]
