"""`choria-broker-adapters render`: output, atomic and change-only writes, exit status 78."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from choria_broker_adapters.cli import main
from choria_broker_adapters.config.render import render_broker_config
from choria_broker_adapters.core.exits import EXIT_CONFIG, EXIT_FAILURE, EXIT_OK

DATA = Path(__file__).parent / "data" / "render"
GOOD = DATA / "docs_node_data.yaml"
ADAPTER_YAML = "choria::broker::adapters:\n  node_data:\n    type: jetstream\n"


def expected(path: Path) -> str:
    import yaml

    return render_broker_config(yaml.safe_load(path.read_text()))


def test_prints_the_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["render", "--data", str(GOOD)]) == EXIT_OK
    assert capsys.readouterr().out == expected(GOOD)


def test_output_is_written_with_mode_0640_and_left_alone_when_unchanged(tmp_path: Path) -> None:
    output = tmp_path / "broker.conf"
    assert main(["render", "--data", str(GOOD), "--output", str(output)]) == EXIT_OK
    assert output.read_text() == expected(GOOD)
    assert output.stat().st_mode & 0o777 == 0o640
    # Push the modification time into the past so "unchanged" is visible without waiting.
    os.utime(output, ns=(1_000_000_000, 1_000_000_000))
    inode = output.stat().st_ino
    assert main(["render", "--data", str(GOOD), "--output", str(output)]) == EXIT_OK
    assert output.stat().st_mtime_ns == 1_000_000_000
    assert output.stat().st_ino == inode
    assert [p.name for p in tmp_path.iterdir()] == ["broker.conf"]


def test_changed_content_replaces_the_file_atomically(tmp_path: Path) -> None:
    output = tmp_path / "broker.conf"
    output.write_text("old\n")
    os.chmod(output, 0o600)
    inode = output.stat().st_ino
    assert main(["render", "--data", str(GOOD), "--output", str(output)]) == EXIT_OK
    assert output.read_text() == expected(GOOD)
    # A rename, not an in-place rewrite: a reader never sees a half-written file.
    assert output.stat().st_ino != inode
    assert output.stat().st_mode & 0o777 == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["broker.conf"]


@pytest.mark.parametrize(
    ("yaml_text", "key"),
    [
        (ADAPTER_YAML + '    ingest: {topic: a, workers: "10"}\n',
         "choria::broker::adapters.node_data.ingest.workers"),
        (ADAPTER_YAML + '    ingest: {topic: "a\\nplugin.x = y"}\n',
         "choria::broker::adapters.node_data.ingest.topic"),
        ("choria::broker::stats_port: '8222'\n", "choria::broker::stats_port"),
    ],
    ids=["quoted-workers", "newline-topic", "quoted-port"],
)  # fmt: skip
def test_invalid_data_exits_78_naming_the_key_and_writes_nothing(
    tmp_path: Path, yaml_text: str, key: str, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data.yaml"
    data.write_text(yaml_text)
    output = tmp_path / "broker.conf"
    assert main(["render", "--data", str(data), "--output", str(output)]) == EXIT_CONFIG
    assert key in capsys.readouterr().err
    assert not output.exists()


def test_unreadable_yaml_is_a_failure_not_a_config_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data.yaml"
    data.write_text("choria::broker::adapters: {node_data: [\n")
    assert main(["render", "--data", str(data)]) == EXIT_FAILURE
    assert "cannot read" in capsys.readouterr().err
    assert main(["render", "--data", str(tmp_path / "missing.yaml")]) == EXIT_FAILURE


def test_installed_command_reads_stdin_and_teaches_in_help() -> None:
    command = [sys.executable, "-m", "choria_broker_adapters"]
    result = subprocess.run(
        [*command, "render", "--data", "-"],
        input=GOOD.read_text(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == EXIT_OK, result.stderr
    assert result.stdout == expected(GOOD)
    help_text = subprocess.run(
        [*command, "render", "--help"], capture_output=True, text=True, timeout=60
    ).stdout
    assert "choria-broker-adapters render --data adapters.yaml --output /etc/choria/broker.conf" in help_text
    assert "78" in help_text
