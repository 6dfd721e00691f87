"""`streams setup` / `streams status` against a real nats-server (a fresh one per test).

A fresh server per test also sidesteps the nats-server 2.15.1 file-store pitfall (re-created
streams of the same name bringing old messages back).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import nats
import pytest

from choria_broker_adapters.cli import main
from choria_broker_adapters.core.exits import EXIT_CONFIG, EXIT_FAILURE, EXIT_OK
from choria_broker_adapters.devtools.natsserver import NatsServer, free_port

WEEK_NS = 7 * 24 * 3600 * 10**9
ADAPTER = "plugin.choria.adapter"


def write_config(tmp_path: Path, server: str, adapters: dict[str, dict[str, str]]) -> Path:
    """A broker.conf with the given adapters: {name: {key suffix: value}}."""
    lines = [f"plugin.choria.middleware_hosts = {server}", f"plugin.choria.adapters = {','.join(adapters)}"]
    for name, keys in adapters.items():
        keys = {"type": "choria_streams", "ingest.topic": f"choria.ingest.{name}", **keys}
        lines += [f"{ADAPTER}.{name}.{suffix} = {value}" for suffix, value in keys.items()]
    path = tmp_path / "broker.conf"
    path.write_text("\n".join(lines) + "\n")
    return path


def node_data_config(tmp_path: Path, server: NatsServer, **keys: str) -> Path:
    return write_config(
        tmp_path, server.address, {"node_data": {"stream.topic": "choria.node_metadata.%s", **keys}}
    )


def cli(capsys: pytest.CaptureFixture[str], action: str, *argv: str) -> tuple[int, str, str]:
    # The test servers speak plain NATS; without --disable-tls the default puppet provider wants certs.
    status = main(["streams", action, "--disable-tls", *argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


async def _api(url: str, subject: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    client = await nats.connect(url)
    try:
        reply = await client.request(subject, json.dumps(body).encode() if body else b"", timeout=5)
        return json.loads(reply.data)
    finally:
        await client.close()


def api(server: NatsServer, subject: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    return asyncio.run(_api(server.url, subject, body))


def stored_config(server: NatsServer, name: str = "CHORIA_NODE_DATA") -> dict[str, Any]:
    return api(server, f"$JS.API.STREAM.INFO.{name}")["config"]


def create_by_hand(server: NatsServer, **config: Any) -> None:
    response = api(server, f"$JS.API.STREAM.CREATE.{config['name']}", config)
    assert "error" not in response, response


def publish(server: NatsServer, subjects: list[str]) -> None:
    async def send() -> None:
        client = await nats.connect(server.url)
        jetstream = client.jetstream()
        for subject in subjects:
            await jetstream.publish(subject, b'{"inventory": {}}')
        await client.close()

    asyncio.run(send())


def test_setup_creates_then_is_idempotent(
    jetstream_server: NatsServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = node_data_config(tmp_path, jetstream_server)
    status, out, _ = cli(capsys, "setup", "--config", str(config))
    assert status == EXIT_OK
    assert out.startswith("created CHORIA_NODE_DATA: subjects choria.node_metadata.>, max_age 168h")
    stored = stored_config(jetstream_server)
    assert stored["subjects"] == ["choria.node_metadata.>"]
    assert (stored["max_age"], stored["storage"], stored["retention"], stored["discard"]) == (
        WEEK_NS,
        "file",
        "limits",
        "old",
    )
    assert stored["duplicate_window"] == 120 * 10**9

    status, out, _ = cli(capsys, "setup", "--config", str(config))
    assert (status, out) == (EXIT_OK, "CHORIA_NODE_DATA: up to date\n")


def test_dry_run_touches_nothing(
    jetstream_server: NatsServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = node_data_config(tmp_path, jetstream_server)
    status, out, _ = cli(capsys, "setup", "--config", str(config), "--dry-run")
    assert status == EXIT_OK
    assert out.startswith("would create CHORIA_NODE_DATA:")
    assert api(jetstream_server, "$JS.API.STREAM.INFO.CHORIA_NODE_DATA")["error"]["err_code"] == 10059

    cli(capsys, "setup", "--config", str(config))
    changed = node_data_config(tmp_path, jetstream_server, **{"stream.max_age": "2w"})
    status, out, _ = cli(capsys, "setup", "--config", str(changed), "--dry-run")
    assert (status, out) == (EXIT_OK, "would update CHORIA_NODE_DATA: max_age 168h → 336h\n")
    assert stored_config(jetstream_server)["max_age"] == WEEK_NS


def test_update_changes_only_managed_fields(
    jetstream_server: NatsServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cli(capsys, "setup", "--config", str(node_data_config(tmp_path, jetstream_server)))
    by_hand = {**stored_config(jetstream_server), "description": "kept", "max_bytes": 10**9}
    assert "error" not in api(jetstream_server, "$JS.API.STREAM.UPDATE.CHORIA_NODE_DATA", by_hand)

    config = node_data_config(
        tmp_path, jetstream_server, **{"stream.max_age": "2w", "stream.max_msgs_per_subject": "1"}
    )
    status, out, _ = cli(capsys, "setup", "--config", str(config))
    assert status == EXIT_OK
    assert out == "updated CHORIA_NODE_DATA: max_age 168h → 336h, max_msgs_per_subject unlimited → 1\n"
    stored = stored_config(jetstream_server)
    assert (stored["max_age"], stored["max_msgs_per_subject"]) == (2 * WEEK_NS, 1)
    assert (stored["description"], stored["max_bytes"]) == ("kept", 10**9)
    assert cli(capsys, "setup", "--config", str(config))[1] == "CHORIA_NODE_DATA: up to date\n"


def test_storage_change_is_refused_and_nothing_changes(
    jetstream_server: NatsServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cli(capsys, "setup", "--config", str(node_data_config(tmp_path, jetstream_server)))
    config = node_data_config(
        tmp_path, jetstream_server, **{"stream.storage": "memory", "stream.max_age": "2w"}
    )
    status, out, err = cli(capsys, "setup", "--config", str(config))
    assert status == EXIT_FAILURE
    assert out == ""
    assert err.startswith("refused CHORIA_NODE_DATA: storage file → memory: JetStream cannot change")
    stored = stored_config(jetstream_server)
    # The in-place change in the same run (max_age) is not applied either: no half-updated stream.
    assert (stored["storage"], stored["max_age"]) == ("file", WEEK_NS)


@pytest.mark.parametrize(
    ("retention", "expected_status", "expected_text"),
    [
        ("interest", EXIT_OK, "updated CHORIA_NODE_DATA: retention interest → limits"),
        ("workqueue", EXIT_FAILURE, "refused CHORIA_NODE_DATA: retention workqueue → limits"),
    ],
)
def test_retention_changes(
    jetstream_server: NatsServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    retention: str,
    expected_status: int,
    expected_text: str,
) -> None:
    create_by_hand(
        jetstream_server,
        name="CHORIA_NODE_DATA",
        subjects=["choria.node_metadata.>"],
        retention=retention,
        max_age=WEEK_NS,
    )
    status, out, err = cli(capsys, "setup", "--config", str(node_data_config(tmp_path, jetstream_server)))
    assert status == expected_status
    assert (out + err).startswith(expected_text)
    stored_retention = stored_config(jetstream_server)["retention"]
    assert stored_retention == ("limits" if expected_status == EXIT_OK else retention)


def test_server_refusal_is_reported(
    jetstream_server: NatsServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = node_data_config(tmp_path, jetstream_server, **{"stream.replicas": "3"})
    status, _, err = cli(capsys, "setup", "--config", str(config))
    assert status == EXIT_FAILURE
    assert "failed to create CHORIA_NODE_DATA: JetStream said: replicas > 1 not supported" in err


def test_adapters_sharing_a_stream_get_merged_subjects(
    jetstream_server: NatsServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(
        tmp_path,
        jetstream_server.address,
        {
            "node_data": {"stream.topic": "choria.node_metadata.%s", "stream.name": "CHORIA_FLEET"},
            "replies": {"stream.topic": "choria.replies.%s", "stream.name": "CHORIA_FLEET"},
        },
    )
    status, out, _ = cli(capsys, "setup", "--config", str(config))
    assert status == EXIT_OK
    assert "subjects choria.node_metadata.>, choria.replies.>" in out
    assert stored_config(jetstream_server, "CHORIA_FLEET")["subjects"] == [
        "choria.node_metadata.>",
        "choria.replies.>",
    ]


@pytest.mark.parametrize(
    ("adapters", "message"),
    [
        (
            {
                "one": {"stream.topic": "x.one.%s", "stream.name": "S"},
                "two": {"stream.topic": "x.two.%s", "stream.name": "S", "stream.max_age": "1d"},
            },
            "share stream S but set stream.max_age differently",
        ),
        ({"one": {"stream.topic": "a.%s.b"}}, "stream.subjects"),
        ({"one": {"stream.topic": "x.%s", "ingest.topic": ""}}, "configuration error"),
    ],
)
def test_configuration_errors_exit_78_before_connecting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], adapters: dict[str, dict[str, str]], message: str
) -> None:
    # Nothing listens on this port: a configuration error must be reported without connecting.
    config = write_config(tmp_path, f"127.0.0.1:{free_port()}", adapters)
    for action in ("setup", "status"):
        status, out, err = cli(capsys, action, "--config", str(config))
        if action == "status" and "share stream" in message:
            continue  # status reads streams as they are; sharing conflicts matter to setup only
        assert status == EXIT_CONFIG, (action, err)
        assert message in err
        assert out == ""


def test_tls_files_are_required_unless_disabled(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path, f"127.0.0.1:{free_port()}", {"node_data": {"stream.topic": "x.%s"}})
    status = main(["streams", "setup", "--config", str(config)])
    assert status == EXIT_CONFIG
    assert "use --disable-tls" in capsys.readouterr().err


def test_unreachable_server_fails_with_the_cause(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path, f"127.0.0.1:{free_port()}", {"node_data": {"stream.topic": "x.%s"}})
    status, _, err = cli(capsys, "setup", "--config", str(config))
    assert status == EXIT_FAILURE
    assert "cannot connect to nats://127.0.0.1:" in err
    assert "connection refused" in err


def test_status_reports_missing_then_contents(
    jetstream_server: NatsServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = node_data_config(tmp_path, jetstream_server)
    status, out, _ = cli(capsys, "status", "--config", str(config))
    assert status == EXIT_FAILURE
    assert out == (
        "node_data: stream CHORIA_NODE_DATA missing — run "
        f"`choria-broker-adapters streams setup --config {config}`\n"
    )

    cli(capsys, "setup", "--config", str(config))
    publish(
        jetstream_server,
        [
            "choria.node_metadata.n1.example.net",
            "choria.node_metadata.n2.example.net",
            "choria.node_metadata.n1.example.net",
        ],
    )
    status, out, _ = cli(capsys, "status", "--config", str(config))
    assert status == EXIT_OK
    lines = out.splitlines()
    assert (
        lines[0] == f"node_data: stream CHORIA_NODE_DATA (choria.node_metadata.>) on {jetstream_server.url}"
    )
    assert lines[1].startswith("  messages 3, bytes ")
    assert lines[1].endswith("distinct subjects 2")
    assert lines[2].startswith("  first 20") and ", last 20" in lines[2]

    status, out, _ = cli(capsys, "status", "--config", str(config), "--json")
    (document,) = json.loads(out)["adapters"]
    assert status == EXIT_OK
    assert {
        key: document[key] for key in ("adapter", "stream", "exists", "messages", "distinct_subjects")
    } == {
        "adapter": "node_data",
        "stream": "CHORIA_NODE_DATA",
        "exists": True,
        "messages": 3,
        "distinct_subjects": 2,
    }
    assert document["first_time"] <= document["last_time"]
    assert document["first_time"].endswith("Z")


def test_status_warns_when_the_stream_does_not_capture_the_topic(
    jetstream_server: NatsServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    create_by_hand(jetstream_server, name="CHORIA_NODE_DATA", subjects=["choria.elsewhere.>"])
    status, out, _ = cli(capsys, "status", "--config", str(node_data_config(tmp_path, jetstream_server)))
    assert status == EXIT_FAILURE
    assert "warning: the stream does not capture choria.node_metadata.>" in out


def test_setup_allows_fast_ingest_batches_on_a_server_that_has_them(
    jetstream_server: NatsServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = node_data_config(tmp_path, jetstream_server)
    status, out, _ = cli(capsys, "setup", "--config", str(config))
    assert status == EXIT_OK
    assert out.rstrip().endswith("allow_batched on")
    assert stored_config(jetstream_server)["allow_batched"] is True

    turned_off = {**stored_config(jetstream_server), "allow_batched": False}
    assert "error" not in api(jetstream_server, "$JS.API.STREAM.UPDATE.CHORIA_NODE_DATA", turned_off)
    status, out, _ = cli(capsys, "setup", "--config", str(config))
    assert (status, out) == (EXIT_OK, "updated CHORIA_NODE_DATA: allow_batched off → on\n")
    assert stored_config(jetstream_server)["allow_batched"] is True
