"""The `decode` command, run through the CLI entry point."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import pytest

from choria_broker_adapters.cli import main

DATA = Path(__file__).parent / "data" / "protocol"
EXAMPLES = DATA / "examples"
VECTORS = {vector["name"]: vector for vector in json.loads((DATA / "vectors.json").read_text())["vectors"]}


def example(name: str) -> tuple[Path, bytes]:
    return EXAMPLES / name / "wire.transport.json", (EXAMPLES / name / "expected_output.json").read_bytes()


def stdout_lines(capsys: pytest.CaptureFixture[str]) -> tuple[list[str], str]:
    captured = capsys.readouterr()
    return captured.out.split("\n"), captured.err


def test_defaults_are_request_puppet_choria_streams(capsys: pytest.CaptureFixture[str]) -> None:
    wire, expected = example("v1_registration_inventory_plain")
    assert main(["decode", str(wire)]) == 0
    lines, err = stdout_lines(capsys)
    assert lines == ["choria.node_metadata.node1.example.net", expected.decode("utf-8"), ""]
    assert err == ""


@pytest.mark.parametrize(
    ("name", "arguments"),
    [
        ("v1_registration_inventory_gzip", []),
        ("v1_registration_filecontent_insecure", []),
        ("v1_reply_rpcutil_ping", ["--protocol", "reply"]),
        ("v2_registration_inventory_gzip", ["--security-provider", "choria"]),
        ("v2_reply_rpcutil_ping", ["--security-provider", "choria", "--protocol", "reply"]),
    ],
)
def test_examples_print_subject_then_exact_document(
    name: str, arguments: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    wire, expected = example(name)
    assert main(["decode", *arguments, str(wire)]) == 0
    out = capsys.readouterr().out.encode("utf-8")
    assert out == b"choria.node_metadata.node1.example.net\n" + expected + b"\n"


def test_jetstream_type_and_topic(capsys: pytest.CaptureFixture[str]) -> None:
    wire, expected = example("v1_registration_inventory_gzip")
    assert main(["decode", "--type", "jetstream", "--topic", "nodes.%s.inventory", str(wire)]) == 0
    lines, _ = stdout_lines(capsys)
    assert lines[0] == "nodes.node1.example.net.inventory"
    assert lines[1] == expected.decode().replace(":choria_streams:", ":jetstream:")


def test_reads_standard_input(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    wire, expected = example("v1_reply_rpcutil_ping")
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(wire.read_bytes())))
    assert main(["decode", "--protocol", "reply", "-"]) == 0
    assert capsys.readouterr().out.split("\n")[1] == expected.decode()
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(wire.read_bytes())))
    assert main(["decode", "--protocol", "reply"]) == 0  # FILE defaults to "-"
    assert capsys.readouterr().out.split("\n")[1] == expected.decode()


@pytest.mark.parametrize(
    ("vector", "arguments", "reason"),
    [
        ("v1 request: headers null", [], "discarded at input: transport: headers is null"),
        ("v1 request: data not base64", [], "discarded at input: transport: data is not base64"),
        ("v1 reply: envelope null", ["--protocol", "reply"], "discarded at input: reply: envelope is null"),
        ("v1 request: time in milliseconds (year > 9999)", [], "discarded at output: time is outside"),
        ("v2 request: minimal valid", [], "discarded at input: transport: version 2 protocol requires"),
    ],
)
def test_discards_print_the_reason_and_exit_1(
    vector: str, arguments: list[str], reason: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    message = tmp_path / "message.json"
    message.write_text(VECTORS[vector]["input"])
    assert main(["decode", *arguments, str(message)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(reason), captured.err


def test_unsafe_subject_is_discarded_at_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # A v1 reply without an envelope decodes with an empty sender: "replies." is no subject.
    secure = json.dumps({"protocol": "choria:secure:reply:1", "message": '{"message":"m"}'})
    transport = {"protocol": "choria:transport:1", "data": base64.b64encode(secure.encode()).decode()}
    message = tmp_path / "message.json"
    message.write_text(json.dumps(transport))
    assert main(["decode", "--protocol", "reply", "--topic", "replies.%s", str(message)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("discarded at output: sender '' makes an unsafe subject: ")
    # The same message under a topic without %s is published.
    assert main(["decode", "--protocol", "reply", "--topic", "replies.all", str(message)]) == 0
    assert capsys.readouterr().out.startswith("replies.all\n")


def test_verbose_shows_the_envelope_on_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    wire, _ = example("v2_registration_inventory_gzip")
    assert main(["decode", "-v", "--security-provider", "choria", str(wire)]) == 0
    err = capsys.readouterr().err
    assert "sender='node1.example.net'" in err
    assert "time=2023-11-14T22:13:20.123456789Z" in err
    assert "message_id=17:node1.example.net:" in err


def test_missing_file_is_a_failure(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["decode", str(tmp_path / "absent.json")]) == 1
    assert "cannot read" in capsys.readouterr().err


def test_help_teaches_with_examples(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["decode", "--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert "examples:" in out
    assert "--security-provider" in out
    assert "exit status" in out
