"""No secret in any output: a runtime configured with a password, a token URL, a user:pass URL
and a credentials file never prints one of them, in `check` (text and JSON), `streams`, the
run's log at debug level, `/choria/`, the Prometheus exposition, or configuration errors.

The URL credentials are also shown to be used: the Choria network server accepts only the
token and the JetStream server only the user and password given in the URLs, and the
registration published on one is stored through the other.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from pathlib import Path

import nats
import nkeys
import pytest

from choria_broker_adapters.devtools.natsserver import NatsServer, free_port
from tests.runtime_support import RuntimeProcess, example, logged, stream_count, wait_until

PASSWORD = "P4SS-w0rd-s3cr3t"
TOKEN = "T0KEN-s3cr3t-xyz"
URL_PASSWORD = "URLP4SS-s3cr3t"
SEED = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER).decode()
SECRETS = (PASSWORD, TOKEN, URL_PASSWORD, SEED)
TOPIC = "mcollective.broadcast.agent.registration"


def leaked(text: str) -> list[str]:
    return [secret for secret in SECRETS if secret in text]


def creds_file(path: Path) -> Path:
    path.write_text(
        "-----BEGIN NATS USER JWT-----\neyJhbGciOiJlZDI1NTE5In0.e30.c2ln\n------END NATS USER JWT------\n\n"
        f"-----BEGIN USER NKEY SEED-----\n{SEED}\n------END USER NKEY SEED------\n"
    )
    return path


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "choria_broker_adapters", *args],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


@pytest.fixture
def secured(nats_server_factory: Callable[..., NatsServer]) -> tuple[NatsServer, NatsServer]:
    choria = nats_server_factory(jetstream=False, extra_config=f'authorization {{ token: "{TOKEN}" }}')
    jetstream = nats_server_factory(
        jetstream=True, extra_config=f'authorization {{ user: "js", password: "{URL_PASSWORD}" }}'
    )
    return choria, jetstream


def config_text(choria: NatsServer, jetstream: NatsServer, creds: Path, stats_port: int) -> str:
    unreachable = free_port()
    return (
        "\n".join(
            [
                "identity = adapter1.example.net",
                "loglevel = debug",
                f"plugin.choria.middleware_hosts = nats://{TOKEN}@{choria.address}",
                "plugin.nats.user = adapter",
                f"plugin.nats.pass = {PASSWORD}",
                f"plugin.nats.pass {PASSWORD}",  # a line without '=': warned about, never echoed
                f"plugin.nats.credentials = {creds}",
                f"plugin.choria.stats_port = {stats_port}",
                "plugin.choria.adapters = nodes,lost",
                "plugin.choria.adapter.nodes.type = choria_streams",
                f"plugin.choria.adapter.nodes.ingest.topic = {TOPIC}",
                "plugin.choria.adapter.nodes.ingest.protocol = request",
                "plugin.choria.adapter.nodes.ingest.workers = 2",
                "plugin.choria.adapter.nodes.stream.workers = 2",
                "plugin.choria.adapter.nodes.stream.topic = choria.node_metadata.%s",
                f"plugin.choria.adapter.nodes.stream.servers = nats://js:{URL_PASSWORD}@{jetstream.address}",
                "plugin.choria.adapter.lost.type = jetstream",
                "plugin.choria.adapter.lost.ingest.topic = lost.in",
                "plugin.choria.adapter.lost.ingest.workers = 1",
                "plugin.choria.adapter.lost.stream.workers = 1",
                "plugin.choria.adapter.lost.stream.topic = lost.%s",
                # nobody listens here: connection failures are logged over and over
                f"plugin.choria.adapter.lost.stream.servers = nats://js:{URL_PASSWORD}@127.0.0.1:{unreachable}",
            ]
        )
        + "\n"
    )


async def test_no_secret_in_any_output_of_a_working_runtime(
    secured: tuple[NatsServer, NatsServer], tmp_path: Path
) -> None:
    choria, jetstream = secured
    stats_port = free_port()
    config = tmp_path / "broker.conf"
    config.write_text(config_text(choria, jetstream, creds_file(tmp_path / "user.creds"), stats_port))
    plugin_d = tmp_path / "plugin.d"
    plugin_d.mkdir()
    (plugin_d / "nats.cfg").write_text(f"pass {PASSWORD}\n")  # plugin.nats.pass without '='
    outputs: dict[str, str] = {}

    for name, args in {
        "check": ("check", "--config", str(config), "--disable-tls"),
        "check --json": ("check", "--config", str(config), "--disable-tls", "--json"),
        "streams setup --dry-run": (
            "streams",
            "setup",
            "--config",
            str(config),
            "--dry-run",
            "--disable-tls",
        ),
    }.items():
        done = await asyncio.to_thread(cli, *args)
        outputs[name] = done.stdout + done.stderr
    assert "valid, 2 adapters" in outputs["check"]
    assert "not a 'key = value' line" in outputs["check"]
    assert json.loads(outputs["check --json"])["valid"] is True

    nc = await nats.connect(jetstream.url, user="js", password=URL_PASSWORD)
    await nc.jetstream().add_stream(name="NODES", subjects=["choria.node_metadata.>"])
    await nc.close()
    status = await asyncio.to_thread(cli, "streams", "status", "--config", str(config), "--disable-tls")
    outputs["streams status"] = status.stdout + status.stderr

    runtime = RuntimeProcess(config, log_path=tmp_path / "runtime.log")
    try:
        await wait_until(logged(runtime, f"Subscribed to {TOPIC}"), 30, "the ingest subscription")
        await wait_until(logged(runtime, "cannot connect to"), 30, "a logged connection failure")
        wire, _, expected = example("v1_registration_inventory_plain")
        publisher = await nats.connect(choria.url, token=TOKEN)
        js_client = await nats.connect(jetstream.url, user="js", password=URL_PASSWORD)
        js = js_client.jetstream()

        async def stored() -> bool:
            await publisher.publish(TOPIC, wire)  # until the subscription is live at the server
            return await stream_count(js, "NODES") >= 1

        await wait_until(stored, 30, "the registration stored through the URL credentials")
        assert (await js.get_last_msg("NODES", "choria.node_metadata.>")).data == expected
        await publisher.close()
        await js_client.close()
        for path in ("/choria/", "/choria/prometheus"):
            with urllib.request.urlopen(f"http://127.0.0.1:{stats_port}{path}", timeout=10) as response:
                outputs[path] = response.read().decode()
    finally:
        assert runtime.terminate() == 0
    outputs["run log"] = runtime.log_text()

    assert "cannot connect to" in outputs["run log"]
    assert {name: leaked(text) for name, text in outputs.items()} == {name: [] for name in outputs}


@pytest.mark.parametrize(
    ("servers_line", "expected"),
    [
        (f"plugin.choria.middleware_hosts = nats://admin:{URL_PASSWORD}@broker", "has no port"),
        (f"plugin.choria.middleware_hosts = ftp://{TOKEN}@broker:21", "scheme 'ftp'"),
        (f"plugin.choria.adapter.a.stream.servers = nats://a:{URL_PASSWORD}@h:4222,", "empty entry"),
    ],
)
def test_configuration_errors_never_repeat_a_secret(tmp_path: Path, servers_line: str, expected: str) -> None:
    config = tmp_path / "broker.conf"
    config.write_text(
        "identity = a.example.net\nplugin.choria.adapters = a\nplugin.choria.adapter.a.type = jetstream\n"
        f"plugin.choria.adapter.a.ingest.topic = x\n{servers_line}\n"
    )
    for args in (("check",), ("check", "--json"), ("run", "--disable-tls")):
        done = cli(*args[:1], "--config", str(config), *args[1:])
        assert done.returncode == 78
        assert expected in done.stdout + done.stderr
        assert leaked(done.stdout + done.stderr) == []
