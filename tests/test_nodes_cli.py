"""`nodes` and `nodes export` against a real nats-server holding a realistic registration stream.

The stream is filled directly with adapter output documents the test builds (several per
node, the latest decides), so every expectation comes from what the test generated.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import gzip
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import nats
import pytest
import yaml

from choria_broker_adapters.cli import main
from choria_broker_adapters.core.exits import EXIT_CONFIG, EXIT_FAILURE, EXIT_OK, EXIT_USAGE
from choria_broker_adapters.devtools import fleet
from choria_broker_adapters.devtools.natsserver import NatsServer, free_port
from choria_broker_adapters.jetstream import inventory as stream_inventory

DATA = Path(__file__).parent / "data"
SCHEMA = json.loads((DATA / "discovery" / "inventory_file.json").read_text())
PREFIX = "choria.node_metadata."
STREAM = "CHORIA_NODE_DATA"
NOW = datetime.datetime.now(datetime.UTC)
FRESH = NOW - datetime.timedelta(seconds=30)
STALE = NOW - datetime.timedelta(hours=2)


def rfc3339(moment: datetime.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def document(sender: str, payload: str, moment: datetime.datetime, sequence: int) -> bytes:
    return json.dumps(
        {
            "protocol": "choria:adapters:jetstream:output:1",
            "data": payload,
            "sender": sender,
            "time": rfc3339(moment),
            "requestid": f"{sequence:032x}",
        },
        separators=(",", ":"),
    ).encode()


def inventory_payload(content: dict[str, Any], *, compressed: bool) -> str:
    if compressed:
        packed = base64.b64encode(gzip.compress(json.dumps(content).encode())).decode()
        return json.dumps({"protocol": "choria:registration:inventorycontent:1", "zcontent": packed})
    return json.dumps({"protocol": "choria:registration:inventorycontent:1", "content": content})


def file_payload(body: bytes) -> str:
    return json.dumps(
        {
            "mtime": 1699990000,
            "file": "/etc/choria/registration.json",
            "updated": False,
            "protocol": "choria:registration:filecontent:1",
            "content": base64.b64encode(body).decode(),
        }
    )


@dataclass
class Expected:
    """What the test put in the stream, per node: its latest registration and latest inventory."""

    kind: dict[str, str] = field(default_factory=dict)
    latest: dict[str, datetime.datetime] = field(default_factory=dict)
    inventory: dict[str, dict[str, Any]] = field(default_factory=dict)
    messages: list[tuple[str, bytes]] = field(default_factory=list)

    def add(self, identity: str, payload: str, moment: datetime.datetime, kind: str) -> None:
        self.messages.append((PREFIX + identity, document(identity, payload, moment, len(self.messages))))
        self.kind[identity], self.latest[identity] = kind, moment

    def add_inventory(
        self, identity: str, index: int, moment: datetime.datetime, *, compressed: bool
    ) -> None:
        content = fleet.inventory(identity, index, int(moment.timestamp()))["content"]
        assert isinstance(content, dict)
        self.add(identity, inventory_payload(content, compressed=compressed), moment, "inventorycontent")
        self.inventory[identity] = content


def build_fleet() -> Expected:
    expected = Expected()
    history = (STALE - datetime.timedelta(hours=3), STALE - datetime.timedelta(hours=1))
    # Every node registers three times; only the third counts.
    for index in range(6):
        identity = fleet.node_name(index)
        compressed = index % 2 == 1
        last = STALE if index >= 4 else FRESH  # nodes 4 and 5 went quiet
        for moment in (*history, last):
            expected.add_inventory(identity, index, moment, compressed=compressed)
    # Only file content, never an inventory.
    for moment in (*history, FRESH):
        expected.add("files.example.net", file_payload(b'{"roles":["web"]}\n'), moment, "filecontent")
    # Both registration plugins: an inventory, then file content last.
    expected.add_inventory("both.example.net", 7, history[1], compressed=True)
    expected.add("both.example.net", file_payload(b"x"), FRESH, "filecontent")
    # A good registration followed by a corrupt one: listed as unreadable, exported from the good one.
    expected.add_inventory("corrupt.example.net", 8, history[1], compressed=False)
    expected.messages.append((PREFIX + "corrupt.example.net", b"\x00 not a document"))
    expected.kind["corrupt.example.net"] = "unreadable"
    return expected


def write_config(tmp_path: Path, server: NatsServer, extra: str = "") -> Path:
    path = tmp_path / "broker.conf"
    path.write_text(
        f"plugin.choria.middleware_hosts = {server.address}\n"
        "plugin.choria.adapters = node_data\n"
        "plugin.choria.adapter.node_data.type = jetstream\n"
        "plugin.choria.adapter.node_data.ingest.topic = mcollective.broadcast.agent.registration\n"
        "plugin.choria.adapter.node_data.ingest.protocol = request\n"
        "plugin.choria.adapter.node_data.stream.topic = choria.node_metadata.%s\n" + extra
    )
    return path


def publish_all(server: NatsServer, messages: list[tuple[str, bytes]]) -> None:
    async def send() -> None:
        client = await nats.connect(server.url)
        jetstream = client.jetstream()
        for subject, body in messages:
            await jetstream.publish(subject, body)
        await client.close()

    asyncio.run(send())


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main([*argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


@pytest.fixture
def filled(
    nats_server_factory: Callable[..., NatsServer], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> tuple[Path, Expected, NatsServer]:
    server = nats_server_factory(jetstream=True)
    config = write_config(tmp_path, server)
    status, _, err = run_cli(capsys, "streams", "setup", "--config", str(config), "--disable-tls")
    assert status == EXIT_OK, err
    expected = build_fleet()
    publish_all(server, expected.messages)
    return config, expected, server


def nodes_json(capsys: pytest.CaptureFixture[str], config: Path, *argv: str) -> tuple[int, dict[str, Any]]:
    status, out, _ = run_cli(capsys, "nodes", "--config", str(config), "--disable-tls", "--json", *argv)
    return status, json.loads(out)


def test_rows_are_each_nodes_latest_registration(
    filled: tuple[Path, Expected, NatsServer], capsys: pytest.CaptureFixture[str]
) -> None:
    config, expected, _ = filled
    status, listing = nodes_json(capsys, config)
    assert status == EXIT_OK
    assert listing["method"] == stream_inventory.METHOD_DIRECT
    rows = {row["identity"]: row for row in listing["nodes"]}
    assert sorted(rows) == sorted(expected.kind)
    assert {identity: row["protocol"] for identity, row in rows.items()} == expected.kind
    for identity, row in rows.items():
        content = expected.inventory.get(identity)
        if expected.kind[identity] == "inventorycontent":
            assert content is not None
            assert (row["agents"], row["classes"]) == (len(content["agents"]), len(content["classes"]))
        else:
            assert (row["agents"], row["classes"]) == (None, None)
        if identity != "corrupt.example.net":
            assert row["time"] == rfc3339(expected.latest[identity])
        assert row["stored_messages"] == sum(subject == PREFIX + identity for subject, _ in expected.messages)
    corrupt = rows["corrupt.example.net"]
    assert corrupt["problem"] == "the stored message is not JSON"
    assert corrupt["time"] is not None  # JetStream's storage time stands in
    summary = listing["summary"]
    assert summary == {
        "nodes": len(expected.kind),
        "stale": None,
        "stale_after_seconds": None,
        "unreadable": 1,
        "newest": summary["newest"],
        "oldest": rfc3339(STALE),
    }


def test_stale_lists_only_stale_nodes_and_exits_1(
    filled: tuple[Path, Expected, NatsServer], capsys: pytest.CaptureFixture[str]
) -> None:
    config, expected, _ = filled
    stale = sorted(identity for identity, moment in expected.latest.items() if moment == STALE)
    assert len(stale) == 2
    status, listing = nodes_json(capsys, config, "--stale", "15m")
    assert status == EXIT_FAILURE
    assert [row["identity"] for row in listing["nodes"]] == stale
    assert all(row["stale"] for row in listing["nodes"])
    assert (listing["summary"]["nodes"], listing["summary"]["stale"]) == (len(expected.kind), 2)
    status, listing = nodes_json(capsys, config, "--stale", "3h")
    assert (status, listing["nodes"], listing["summary"]["stale"]) == (EXIT_OK, [], 0)


def test_text_table_and_summary(
    filled: tuple[Path, Expected, NatsServer], capsys: pytest.CaptureFixture[str]
) -> None:
    config, expected, _ = filled
    status, out, _ = run_cli(capsys, "nodes", "--config", str(config), "--disable-tls", "--stale", "15m")
    assert status == EXIT_FAILURE
    lines = out.splitlines()
    assert lines[0].split() == ["IDENTITY", "LAST", "REGISTRATION", "AGE", "PROTOCOL", "AGENTS", "CLASSES"]
    assert [line.split()[0] for line in lines[1:-1]] == [fleet.node_name(4), fleet.node_name(5)]
    assert lines[1].split()[3:] == ["inventorycontent", "5", "3"]
    assert lines[-1].startswith(
        f"nodes {len(expected.kind)}, stale 2 (older than 15m), unreadable 1, newest "
    )
    status, out, _ = run_cli(capsys, "nodes", "--config", str(config), "--disable-tls")
    corrupt_line = next(line for line in out.splitlines() if line.startswith("corrupt.example.net"))
    assert corrupt_line.split()[3:6] == ["unreadable", "-", "-"]
    assert corrupt_line.endswith("  (the stored message is not JSON)")


def test_filters(filled: tuple[Path, Expected, NatsServer], capsys: pytest.CaptureFixture[str]) -> None:
    config, expected, _ = filled
    # Only nodes whose *latest* registration is an inventory can match a filter.
    latest_inventories = {
        i: c for i, c in expected.inventory.items() if expected.kind[i] == "inventorycontent"
    }
    web = sorted(i for i, c in latest_inventories.items() if "role::web" in c["classes"])
    _, listing = nodes_json(capsys, config, "--filter-class", "role::web")
    assert [row["identity"] for row in listing["nodes"]] == web
    db = sorted(i for i, c in latest_inventories.items() if c["facts"]["role"] == "db")
    _, listing = nodes_json(capsys, config, "--filter-fact", "role=db", "--filter-class", "/^profile::/")
    assert [row["identity"] for row in listing["nodes"]] == db
    _, listing = nodes_json(capsys, config, "--filter-fact", "os.release.major=9")
    assert len(listing["nodes"]) == len(latest_inventories)
    _, listing = nodes_json(capsys, config, "--filter-fact", "os.family=Debian")
    assert listing["nodes"] == []


@pytest.mark.parametrize("output_name", [None, "inventory.json", "inventory.yaml"])
def test_export_is_the_non_stale_inventory_nodes(
    filled: tuple[Path, Expected, NatsServer],
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    output_name: str | None,
) -> None:
    config, expected, _ = filled
    argv = ["nodes", "export", "--format", "inventory", "--config", str(config), "--disable-tls"]
    argv += ["--stale", "15m"]
    if output_name:
        argv += ["--output", str(tmp_path / output_name)]
    status, out, err = run_cli(capsys, *argv)
    assert status == EXIT_OK, err
    if output_name is None:
        document = json.loads(out)
    else:
        text = (tmp_path / output_name).read_text()
        document = yaml.safe_load(text) if output_name.endswith(".yaml") else json.loads(text)
        assert text.lstrip().startswith("$schema:" if output_name.endswith(".yaml") else "{")
        assert list(tmp_path.glob(f".{output_name}.*")) == []
    jsonschema.validate(document, SCHEMA)
    wanted = {
        identity: content
        for identity, content in expected.inventory.items()
        if expected.latest[identity] != STALE
    }
    # Their older inventories, although file content or a corrupt message came last.
    assert {"both.example.net", "corrupt.example.net"} <= set(wanted)
    assert [node["name"] for node in document["nodes"]] == sorted(wanted)
    for node in document["nodes"]:
        content = wanted[node["name"]]
        assert node == {
            "name": node["name"],
            "collectives": content["collectives"],
            "facts": content["facts"],
            "classes": content["classes"],
            "agents": [agent["name"] for agent in content["agents"]],
        }


def test_export_without_stale_keeps_every_inventory_node(
    filled: tuple[Path, Expected, NatsServer], capsys: pytest.CaptureFixture[str]
) -> None:
    config, expected, _ = filled
    status, out, _ = run_cli(
        capsys, "nodes", "export", "--format", "inventory", "--config", str(config), "--disable-tls", "--yaml"
    )
    assert status == EXIT_OK
    document = yaml.safe_load(out)
    jsonschema.validate(document, SCHEMA)
    assert [node["name"] for node in document["nodes"]] == sorted(expected.inventory)


def test_without_allow_direct_every_subject_is_fetched_alone(
    nats_server_factory: Callable[..., NatsServer], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server = nats_server_factory(jetstream=True)
    config = write_config(tmp_path, server)

    async def create() -> None:
        client = await nats.connect(server.url)
        body = {"name": STREAM, "subjects": [PREFIX + ">"], "allow_direct": False}
        reply = await client.request(f"$JS.API.STREAM.CREATE.{STREAM}", json.dumps(body).encode())
        assert "error" not in json.loads(reply.data)
        await client.close()

    asyncio.run(create())
    expected = build_fleet()
    publish_all(server, expected.messages)
    status, listing = nodes_json(capsys, config, "--stale", "15m")
    assert listing["method"] == stream_inventory.METHOD_SINGLE
    assert status == EXIT_FAILURE
    assert [row["identity"] for row in listing["nodes"]] == [fleet.node_name(4), fleet.node_name(5)]
    status, out, _ = run_cli(
        capsys, "nodes", "export", "--format", "inventory", "--config", str(config), "--disable-tls"
    )
    assert [node["name"] for node in json.loads(out)["nodes"]] == sorted(expected.inventory)


def test_chunks_and_cut_short_batches_are_resumed(jetstream_server: NatsServer) -> None:
    subjects = [f"{PREFIX}n{index:03d}.example.net" for index in range(25)]

    async def scenario() -> None:
        client = await nats.connect(jetstream_server.url)
        try:
            body = {"name": STREAM, "subjects": [PREFIX + ">"], "allow_direct": True}
            await client.request(f"$JS.API.STREAM.CREATE.{STREAM}", json.dumps(body).encode())
            jetstream = client.jetstream()
            for round_number in range(3):
                for subject in subjects:
                    await jetstream.publish(subject, f"{subject} {round_number}".encode())
            listing = await stream_inventory.list_subjects(client, STREAM, PREFIX + ">")
            assert listing is not None and listing.subjects == dict.fromkeys(subjects, 3)
            # Registering again after the listing does not change what is read.
            await jetstream.publish(subjects[0], b"too late")
            seen: list[stream_inventory.StoredMessage] = []
            async for chunk in stream_inventory.iter_latest(client, listing, chunk_size=4):
                assert len(chunk) <= 4
                seen += chunk
            assert sorted((m.subject, m.data) for m in seen) == [(s, f"{s} 2".encode()) for s in subjects]
            # A byte limit makes the server stop early; the reader resumes after the last sequence.
            requests: list[str] = []
            publish = client.publish

            async def counted(subject: str, payload: bytes = b"", **options: Any) -> None:
                requests.append(subject)
                await publish(subject, payload, **options)

            client.publish = counted  # type: ignore[method-assign]
            cut = await stream_inventory._direct_batch(
                client,
                STREAM,
                {
                    "multi_last": subjects,
                    "batch": len(subjects),
                    "up_to_seq": listing.last_sequence,
                    "max_bytes": 200,
                },
            )
            client.publish = publish  # type: ignore[method-assign]
            assert [m.subject for m in cut] == subjects
            assert len(requests) > 1  # the limit did cut the first answer short
            history = await stream_inventory.subject_history(client, listing, subjects[3])
            assert [m.data for m in history] == [f"{subjects[3]} {r}".encode() for r in range(3)]
        finally:
            await client.close()

    asyncio.run(scenario())


def test_missing_stream_and_bad_arguments(
    jetstream_server: NatsServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, jetstream_server)
    status, _, err = run_cli(capsys, "nodes", "--config", str(config), "--disable-tls")
    assert status == EXIT_FAILURE
    assert f"stream {STREAM} missing" in err and "streams setup" in err
    status, _, err = run_cli(capsys, "nodes", "--config", str(config), "--adapter", "other", "--disable-tls")
    assert (status, "no adapter 'other'" in err) == (EXIT_USAGE, True)
    with pytest.raises(SystemExit) as exit_info:
        main(["nodes", "--config", str(config), "--stale", "soon"])
    assert exit_info.value.code == EXIT_USAGE
    with pytest.raises(SystemExit):
        main(["nodes", "--config", str(config), "--filter-fact", "novalue"])
    unreachable = tmp_path / "unreachable"
    unreachable.mkdir()
    nowhere = write_config(unreachable, jetstream_server).read_text()
    nowhere = nowhere.replace(jetstream_server.address, f"127.0.0.1:{free_port()}")
    (unreachable / "broker.conf").write_text(nowhere)
    status, out, err = run_cli(capsys, "nodes", "--config", str(unreachable / "broker.conf"), "--disable-tls")
    assert (status, out) == (EXIT_FAILURE, "")
    assert "cannot connect to" in err and "Traceback" not in err
    bad = tmp_path / "bad.conf"
    bad.write_text("plugin.choria.adapters = x\nplugin.choria.adapter.x.type = nope\n")
    assert run_cli(capsys, "nodes", "--config", str(bad))[0] == EXIT_CONFIG


@pytest.mark.parametrize(
    ("windows", "found"),
    [
        # A window starting after every stored message finds nothing; widening to the start does.
        ((datetime.timedelta(hours=-1), None), True),
        ((datetime.timedelta(hours=-1),), False),
    ],
)
def test_export_looks_back_in_widening_windows(
    filled: tuple[Path, Expected, NatsServer],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    windows: tuple[datetime.timedelta | None, ...],
    found: bool,
) -> None:
    config, expected, _ = filled
    monkeypatch.setattr(stream_inventory, "HISTORY_WINDOWS", windows)
    status, out, _ = run_cli(
        capsys, "nodes", "export", "--format", "inventory", "--config", str(config), "--disable-tls"
    )
    assert status == EXIT_OK
    names = {node["name"] for node in json.loads(out)["nodes"]}
    older_only = {"both.example.net", "corrupt.example.net"}
    assert names == (set(expected.inventory) if found else set(expected.inventory) - older_only)
