#!/usr/bin/env python3
"""`nodes` at fleet scale: a stream with N nodes x R registrations, then `nodes --json` timed.

Starts its own nats-server (JetStream, file storage, temporary directory), creates the stream
with `streams setup` (so allow_direct is on, as in production), fills it with R gzip inventory
registrations per node (adapter output documents, the newest last), then runs
`choria-broker-adapters nodes --json` and `nodes export --format inventory` as separate
processes and reports wall time, CPU time and peak RSS of each, with the machine's load.

    .venv/bin/python bench/nodes_bench.py                      # 50,000 nodes x 3
    .venv/bin/python bench/nodes_bench.py --nodes 5000 --json

Target (issue 17): `nodes --json` over 50,000 nodes x 3 registrations in at most 10 s.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import nats

from bench.stats import cpu_ticks_from_stat
from choria_broker_adapters.cli import main as cli_main
from choria_broker_adapters.codec.registration import gzip_base64
from choria_broker_adapters.devtools import fleet
from choria_broker_adapters.devtools.natsserver import NatsServer

TARGET_SECONDS = 10.0
STREAM = "CHORIA_NODE_DATA"
PREFIX = "choria.node_metadata."
FLUSH_EVERY = 2000


def write_config(directory: Path, server: NatsServer) -> Path:
    path = directory / "broker.conf"
    path.write_text(
        f"plugin.choria.middleware_hosts = {server.address}\n"
        "plugin.choria.adapters = node_data\n"
        "plugin.choria.adapter.node_data.type = jetstream\n"
        "plugin.choria.adapter.node_data.ingest.topic = mcollective.broadcast.agent.registration\n"
        "plugin.choria.adapter.node_data.ingest.protocol = request\n"
        "plugin.choria.adapter.node_data.stream.topic = choria.node_metadata.%s\n"
    )
    return path


def registration(identity: str, index: int, moment: datetime.datetime, sequence: int) -> bytes:
    content = fleet.inventory(identity, index, int(moment.timestamp()))["content"]
    payload = json.dumps(
        {
            "protocol": "choria:registration:inventorycontent:1",
            "zcontent": gzip_base64(json.dumps(content, separators=(",", ":")).encode()),
        },
        separators=(",", ":"),
    )
    return json.dumps(
        {
            "protocol": "choria:adapters:jetstream:output:1",
            "data": payload,
            "sender": identity,
            "time": moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "requestid": f"{index:016x}{sequence:016x}",
        },
        separators=(",", ":"),
    ).encode()


async def fill(url: str, nodes: int, rounds: int) -> dict[str, Any]:
    """Publish rounds x nodes documents (core publishes, flushed in batches) and wait until stored."""
    client = await nats.connect(url)
    now = datetime.datetime.now(datetime.UTC)
    started = time.monotonic()
    total_bytes = 0
    try:
        for round_number in range(rounds):
            moment = now - datetime.timedelta(minutes=5 * (rounds - 1 - round_number))
            for index in range(nodes):
                identity = fleet.node_name(index)
                body = registration(identity, index, moment, round_number)
                total_bytes += len(body)
                await client.publish(PREFIX + identity, body)
                if index % FLUSH_EVERY == 0:
                    await client.flush(timeout=30)
        await client.flush(timeout=30)
        deadline = time.monotonic() + 120
        stored = 0
        while time.monotonic() < deadline:
            reply = await client.request(f"$JS.API.STREAM.INFO.{STREAM}", b"", timeout=10)
            state = json.loads(reply.data)["state"]
            stored = state["messages"]
            if stored >= nodes * rounds:
                break
            await asyncio.sleep(0.2)
        return {
            "stored_messages": stored,
            "node_subjects": state["num_subjects"],
            "stream_bytes": state["bytes"],
            "document_bytes_mean": round(total_bytes / (nodes * rounds)),
            "fill_seconds": round(time.monotonic() - started, 2),
        }
    finally:
        await client.close()


def server_cpu_seconds(pid: int | None) -> float:
    if pid is None:
        return 0.0
    return cpu_ticks_from_stat(Path(f"/proc/{pid}/stat").read_text()) / os.sysconf("SC_CLK_TCK")


def timed(argv: list[str], output: Path, server_pid: int | None) -> dict[str, Any]:
    """Run one CLI process; its wall time, CPU time and peak RSS (from wait4), and the server's CPU."""
    server_before = server_cpu_seconds(server_pid)
    command = [sys.executable, "-m", "choria_broker_adapters", *argv]
    started = time.monotonic()
    with output.open("wb") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.PIPE)
        _, status, usage = os.wait4(process.pid, 0)
    wall = time.monotonic() - started
    stderr = process.stderr.read().decode() if process.stderr else ""
    process.returncode = os.waitstatus_to_exitcode(status)
    return {
        "exit_status": process.returncode,
        "wall_seconds": round(wall, 2),
        "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 2),
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
        "nats_server_cpu_seconds": round(server_cpu_seconds(server_pid) - server_before, 2),
        "stderr": stderr.strip()[-500:],
    }


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        return "load average: {:.2f}, {:.2f}, {:.2f}".format(*os.getloadavg())


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--nodes", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="nodes-bench-") as scratch:
        directory = Path(scratch)
        server = NatsServer(jetstream=True, workdir=directory / "nats")
        (directory / "nats").mkdir()
        server.start()
        try:
            config = write_config(directory, server)
            with contextlib.redirect_stdout(sys.stderr):  # keep stdout for the report
                created = cli_main(["streams", "setup", "--config", str(config), "--disable-tls"])
            if created != 0:
                print("streams setup failed", file=sys.stderr)
                return 1
            filled = asyncio.run(fill(server.url, args.nodes, args.rounds))
            load_before = uptime()
            listing_output = directory / "nodes.json"
            listing = timed(
                ["nodes", "--config", str(config), "--disable-tls", "--json"], listing_output, server.pid
            )
            listed = json.loads(listing_output.read_text()) if listing["exit_status"] == 0 else {"nodes": []}
            listing["nodes_listed"] = len(listed["nodes"])
            listing["method"] = listed.get("method")
            del listed
            export_output = directory / "inventory.json"
            export = timed(
                ["nodes", "export", "--format", "inventory", "--config", str(config), "--disable-tls"],
                export_output,
                server.pid,
            )
            exported = json.loads(export_output.read_text()) if export["exit_status"] == 0 else {"nodes": []}
            export["nodes_exported"] = len(exported["nodes"])
            del exported
            load_after = uptime()
        finally:
            server.cleanup()

    report = {
        "nodes": args.nodes,
        "rounds": args.rounds,
        "fill": filled,
        "nodes_json": listing,
        "export": export,
        "target_seconds": TARGET_SECONDS,
        "within_target": listing["exit_status"] == 0
        and listing["nodes_listed"] == args.nodes
        and listing["wall_seconds"] <= TARGET_SECONDS,
        "uptime_before": load_before,
        "uptime_after": load_after,
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(
            f"stream: {filled['stored_messages']} messages, {filled['node_subjects']} node subjects, "
            f"{filled['stream_bytes'] / 2**20:.0f} MiB (filled in {filled['fill_seconds']} s)"
        )
        for name, result, count in (
            ("nodes --json", listing, listing["nodes_listed"]),
            ("nodes export", export, export["nodes_exported"]),
        ):
            print(
                f"{name}: {count} nodes in {result['wall_seconds']} s wall, {result['cpu_seconds']} s CPU, "
                f"peak RSS {result['peak_rss_mb']} MB, exit {result['exit_status']}; "
                f"nats-server {result['nats_server_cpu_seconds']} s CPU meanwhile"
            )
        print(
            f"target: nodes --json <= {TARGET_SECONDS:g} s: {'met' if report['within_target'] else 'MISSED'}"
        )
        print(f"uptime before: {load_before}")
        print(f"uptime after:  {load_after}")
    return 0 if report["within_target"] else 1


if __name__ == "__main__":
    sys.exit(main())
