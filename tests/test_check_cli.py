"""`choria-broker-adapters check`: provenance, warnings, JSON and exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from choria_broker_adapters.cli import main
from choria_broker_adapters.core.exits import EXIT_CONFIG

SAMPLE = Path(__file__).parent / "data" / "config" / "samples" / "broker-01-single-jetstream-adapter.conf"


def test_valid_config_prints_settings_with_provenance(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "--config", str(SAMPLE)]) == 0
    out = capsys.readouterr().out
    assert "valid, 1 adapter" in out
    assert "plugin.choria.adapter.node_data.ingest.topic                = choria.discovery" in out
    assert f"{SAMPLE}:20" in out  # where ingest.topic came from
    assert "plugin.choria.adapter.node_data.queue_len" in out and "# default" in out
    assert "warning" in out and "puppet:4222" in out


def test_json_document(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "--config", str(SAMPLE), "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["valid"] is True
    topic = document["adapters"]["node_data"]["plugin.choria.adapter.node_data.ingest.topic"]
    assert topic == {"value": "choria.discovery", "source": f"{SAMPLE}:20"}
    servers = document["adapters"]["node_data"]["plugin.choria.adapter.node_data.stream.servers"]
    assert servers["value"] == ["nats://js1.example.net:4222"]
    assert document["warnings"]


def test_invalid_config_lists_every_error_and_exits_78(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "broker.conf"
    config.write_text(
        "plugin.choria.adapters = node_data\n"
        "plugin.choria.adapter.node_data.type = kafka\n"
        "plugin.choria.adapter.node_data.ingest.workers = ten\n"
    )
    assert main(["check", "--config", str(config)]) == EXIT_CONFIG
    err = capsys.readouterr().err
    assert f"{config}:2: plugin.choria.adapter.node_data.type: unknown adapter type 'kafka'" in err
    assert f"{config}:3: plugin.choria.adapter.node_data.ingest.workers: 'ten' is not a whole number" in err
    assert (
        f"{config}:1: plugin.choria.adapter.node_data.ingest.topic: adapter 'node_data' has no ingest topic"
        in err
    )


def test_invalid_config_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "broker.conf"
    config.write_text("plugin.choria.adapters = x\nplugin.choria.adapter.x.ingest.topic = t\n")
    assert main(["check", "--config", str(config), "--json"]) == EXIT_CONFIG
    document = json.loads(capsys.readouterr().out)
    assert document["valid"] is False
    assert document["errors"][0] == {
        "file": str(config),
        "line": 1,
        "key": "plugin.choria.adapter.x.type",
        "message": (
            "adapter 'x' has no type; "
            "set plugin.choria.adapter.x.type = choria_streams (or its alias jetstream)"
        ),
    }


def test_password_never_printed(tmp_path: Path) -> None:
    config = tmp_path / "broker.conf"
    config.write_text(SAMPLE.read_text() + "plugin.nats.user = choria\nplugin.nats.pass = s3cr3t-Passw0rd\n")
    for extra in ([], ["--json"]):
        result = subprocess.run(
            [sys.executable, "-m", "choria_broker_adapters", "check", "--config", str(config), *extra],
            capture_output=True,
            text=True,
            check=True,
        )
        assert "s3cr3t-Passw0rd" not in result.stdout + result.stderr
        assert "********" in result.stdout


def test_help_teaches() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "choria_broker_adapters", "check", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "examples:" in result.stdout and "78" in result.stdout
