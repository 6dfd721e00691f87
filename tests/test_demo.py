"""The `demo` command: pure helpers by table, then the real thing end to end as a subprocess."""

from __future__ import annotations

import io
import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from choria_broker_adapters.config.settings import load_settings
from choria_broker_adapters.core.exits import EXIT_INTERRUPTED
from choria_broker_adapters.devtools.demo import demo_broker_conf
from choria_broker_adapters.devtools.demo_report import (
    ADAPTER_NAME,
    Counts,
    DemoOptions,
    DemoReport,
    Progress,
    pretty_json,
    progress_text,
    summary_text,
)
from choria_broker_adapters.devtools.fleet import REGISTRATION_SUBJECT

COMMAND = [sys.executable, "-m", "choria_broker_adapters", "demo"]
ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}

# --------------------------------------------------------------------------- pure parts


def test_demo_config_is_one_node_data_adapter_with_the_intended_keys(tmp_path: Path) -> None:
    config = tmp_path / "broker.conf"
    config.write_text(
        demo_broker_conf(server_url="nats://127.0.0.1:4222", logfile=str(tmp_path / "a.log"), stats_port=0)
    )
    settings = load_settings(str(config))
    assert list(settings.adapters) == [ADAPTER_NAME]
    adapter = settings.adapters[ADAPTER_NAME]
    assert (adapter.type, adapter.ingest_topic, adapter.ingest_protocol, adapter.stream_topic) == (
        "jetstream",
        REGISTRATION_SUBJECT,
        "request",
        "choria.node_metadata.%s",
    )
    assert adapter.stream_name == "CHORIA_NODE_DATA"
    assert adapter.stream_max_msgs_per_subject == -1  # every registration kept: stored == sent
    assert adapter.stream_servers == ()  # JetStream on the middleware server
    assert settings.middleware_hosts == ("nats://127.0.0.1:4222",)


@pytest.mark.parametrize(
    ("value", "width", "expected"),
    [
        ({"a": 1}, 100, '{"a": 1}'),
        ([], 1, "[]"),
        ({"a": [1, 2]}, 5, '{\n  "a": [\n    1,\n    2\n  ]\n}'),
        ({"a": [1, 2], "b": "x"}, 12, '{\n  "a": [1, 2],\n  "b": "x"\n}'),
        ("plain", 1, '"plain"'),
    ],
)
def test_pretty_json_keeps_what_fits_on_one_line(value: Any, width: int, expected: str) -> None:
    assert pretty_json(value, width=width) == expected
    assert json.loads(pretty_json(value, width=width)) == value


def _report(**overrides: Any) -> DemoReport:
    counts = Counts(sent=10, received=10, stored=10)
    values: dict[str, Any] = {
        "options": DemoOptions(nodes=10),
        "counts": counts,
        "stream": "CHORIA_NODE_DATA",
        "stored_in_stream": 10,
        "distinct_subjects": 10,
    }
    values.update(overrides)
    return DemoReport(**values)


@pytest.mark.parametrize(
    ("overrides", "explanation"),
    [
        ({}, None),
        ({"counts": Counts(sent=10, received=8, stored=8)}, "2 registration(s) never reached the adapter"),
        (
            {"counts": Counts(sent=10, received=10, stored=9, drops={"publish": 1}), "stored_in_stream": 9},
            "1 registration(s) dropped by the adapter, reason 'publish'",
        ),
        ({"stored_in_stream": 11}, "holds 11 message(s), 10 were sent"),
        ({"distinct_subjects": 9}, "9 distinct node subject(s) in the stream, expected 10"),
        ({"timed_out": True}, "not everything was acknowledged within"),
        ({"counts": Counts(sent=10, received=10, stored=7, in_flight=3)}, "3 waiting for JetStream"),
        ({"interrupted": True}, "interrupted after sending 10 of 10"),
    ],
)
def test_report_explains_every_way_of_not_storing_each_registration_once(
    overrides: dict[str, Any], explanation: str | None
) -> None:
    report = _report(**overrides)
    if explanation is None:
        assert report.ok and report.problems() == []
        assert "OK: all 10 registrations" in summary_text(report)
    else:
        assert not report.ok
        assert any(explanation in problem for problem in report.problems()), report.problems()
        assert explanation in summary_text(report)


def test_rounds_expect_one_subject_per_node_and_every_registration_stored() -> None:
    report = _report(
        options=DemoOptions(nodes=5, rounds=2),
        counts=Counts(sent=10, received=10, stored=10),
        distinct_subjects=5,
    )
    assert report.problems() == []


def test_counts_from_adapter_state_split_drops_and_outcomes() -> None:
    class State:
        queued = 2
        in_flight = 3
        counts = {
            "received": 20,
            "stored": 12,
            "duplicates": 1,
            "retries": 4,
            "dropped_decode": 5,
            "dropped_publish": 1,
            "dropped_queue_full": 0,
        }

    counts = Counts.from_state(30, State())
    assert counts.drops == {"decode": 5, "publish": 1}
    assert counts.ingest_outcomes == 25  # 20 queued + 5 refused on arrival
    assert counts.published == 16  # 12 acknowledged + 3 in flight + 1 given up
    assert counts.resolved == 18
    assert not counts.idle
    assert progress_text(counts, 40, 1.0) == (
        "sent 30/40 · received 20 · acknowledged 12 · 12 msgs/s · dropped 6"
    )


@pytest.mark.parametrize(
    ("interactive", "expected"),
    [(True, "\rlong line\rshort    \n"), (False, "long line\nshort\n")],
)
def test_progress_rewrites_one_line_on_a_terminal_and_prints_lines_elsewhere(
    interactive: bool, expected: str
) -> None:
    stream = io.StringIO()
    progress = Progress(stream, interactive=interactive)
    progress.show("long line")
    progress.finish("short")
    assert stream.getvalue() == expected


# --------------------------------------------------------------------------- end to end


def _summary_value(text: str, label: str) -> int:
    match = re.search(rf"^  {re.escape(label)}\s+(\d+)", text, re.MULTILINE)
    assert match, f"no {label!r} line in:\n{text}"
    return int(match.group(1))


def test_demo_stores_every_registration_and_prints_a_document() -> None:
    result = subprocess.run([*COMMAND, "--nodes", "50"], capture_output=True, text=True, timeout=60, env=ENV)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    for label in (
        "sent by the fleet",
        "received by the adapter",
        "published to JetStream",
        "acknowledged by JetStream",
        "stored in CHORIA_NODE_DATA",
        "distinct node subjects",
    ):
        assert _summary_value(out, label) == 50
    assert "one stored document: choria.node_metadata.node00000.fleet.example.net" in out
    assert '"protocol": "choria:adapters:jetstream:output:1"' in out
    assert '"protocol": "choria:registration:inventorycontent:1"' in out  # data, decoded
    assert "OK: all 50 registrations" in out
    # The summary ends with the node count and a glimpse of `nodes`: its header and two rows.
    tail = out.rstrip("\n").splitlines()[-4:]
    assert tail[0] == "nodes in the stream: 50 (choria-broker-adapters nodes --config FILE)"
    assert tail[1].split()[:3] == ["IDENTITY", "LAST", "REGISTRATION"]
    assert [line.split()[0] for line in tail[2:]] == [
        f"node0000{index}.fleet.example.net" for index in (0, 1)
    ]
    assert all(line.split()[3:] == ["inventorycontent", "5", "3"] for line in tail[2:])
    assert "sent 50/50" in result.stderr  # progress, plain lines when not a terminal


@pytest.mark.parametrize(("nodes", "rounds"), [(50, 1), (20, 3)])
def test_demo_json_counts(nodes: int, rounds: int) -> None:
    result = subprocess.run(
        [*COMMAND, "--nodes", str(nodes), "--rounds", str(rounds), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        env=ENV,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    sent = nodes * rounds
    assert report["ok"] is True and report["problems"] == []
    assert (report["sent"], report["received"], report["published"], report["acknowledged"]) == (sent,) * 4
    assert report["stored"] == sent
    assert report["distinct_subjects"] == nodes
    assert report["node_count"] == nodes and len(report["node_sample"]) == 3
    assert report["dropped"] == {}
    assert report["msgs_per_second"] > 0
    sample = report["sample"]
    assert sample["subject"] == "choria.node_metadata.node00000.fleet.example.net"
    assert sample["document"]["sender"] == "node00000.fleet.example.net"
    assert sample["data"]["content"]["status"]["identity"] == "node00000.fleet.example.net"
    assert sample["message_id"].endswith(sample["document"]["requestid"])
    assert not Path(report["workdir"]).exists()


def _stop(process: subprocess.Popen[bytes]) -> None:
    """After a failed assertion: SIGTERM lets the demo clean up; SIGKILL only if it hangs."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _children(pid: int) -> list[int]:
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:
            children.append(int(stat.parent.name))
    return children


def _read_until(pipe: Any, marker: str, timeout: float) -> str:
    """What an unbuffered binary pipe says until `marker` appears (select keeps the wait bounded)."""
    seen = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([pipe], [], [], 0.2)
        if ready:
            chunk = os.read(pipe.fileno(), 65536)
            if not chunk:
                break
            seen += chunk
            if marker.encode() in seen:
                return seen.decode()
    raise AssertionError(f"no {marker!r} within {timeout}s; got:\n{seen.decode(errors='replace')}")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_keep_running_stops_and_removes_everything_on_a_signal(sig: signal.Signals) -> None:
    process = subprocess.Popen(
        [*COMMAND, "--nodes", "20", "--keep-running"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        bufsize=0,
        env=ENV,
    )
    try:
        shown = _read_until(process.stdout, "ready: press Ctrl-C", 60)
        server_pid = int(re.search(r"\(pid (\d+);", shown).group(1))  # type: ignore[union-attr]
        workdir = Path(re.search(r"temp directory\s+(\S+)", shown).group(1))  # type: ignore[union-attr]
        assert _pid_alive(server_pid) and (workdir / "broker.conf").is_file()
        assert "OK: all 20 registrations" in shown
        process.send_signal(sig)
        # 0: the demo had finished and stored everything; Ctrl-C is how --keep-running ends.
        assert process.wait(30) == 0
        assert not _pid_alive(server_pid)
        assert not workdir.exists()
    finally:
        _stop(process)


def test_interrupt_while_publishing_exits_130_and_cleans_up() -> None:
    process = subprocess.Popen(
        [*COMMAND, "--nodes", "1000000"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        bufsize=0,
        env=ENV,
    )
    try:
        _read_until(process.stderr, "sent ", 60)  # the first progress line: publishing has begun
        (server_pid,) = _children(process.pid)
        cmdline = Path(f"/proc/{server_pid}/cmdline").read_bytes().split(b"\0")
        workdir = Path(cmdline[cmdline.index(b"-c") + 1].decode()).parent.parent
        assert workdir.name.startswith("cba-demo-") and workdir.is_dir()
        process.send_signal(signal.SIGINT)
        assert process.wait(30) == EXIT_INTERRUPTED
        assert b"interrupted after sending" in process.stderr.read()  # type: ignore[union-attr]
        assert not _pid_alive(server_pid)
        assert not workdir.exists()
    finally:
        _stop(process)


def test_a_killed_demo_takes_its_nats_server_with_it() -> None:
    process = subprocess.Popen(
        [*COMMAND, "--nodes", "5", "--keep-running"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        bufsize=0,
        env=ENV,
    )
    try:
        shown = _read_until(process.stdout, "ready: press Ctrl-C", 60)
        server_pid = int(re.search(r"\(pid (\d+);", shown).group(1))  # type: ignore[union-attr]
        workdir = Path(re.search(r"temp directory\s+(\S+)", shown).group(1))  # type: ignore[union-attr]
        process.kill()  # no chance to clean up: the kernel's parent-death signal stops the server
        process.wait(10)
        deadline = time.monotonic() + 15
        while _pid_alive(server_pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _pid_alive(server_pid)
    finally:
        _stop(process)
        shutil.rmtree(workdir, ignore_errors=True)  # only a clean exit removes it
