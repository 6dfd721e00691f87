"""Evidence for two of the unit's hardening settings, from the real runtime at work.

`MemoryDenyWriteExecute` and `RestrictAddressFamilies` break a program only when it does what
they forbid, so the runtime (with uvloop, orjson and cryptography at work: an `enforce` adapter
stores a message only once its signature verified, RSA and x509 for protocol v1, ed25519 and
JWT for v2) runs a whole message flow against a real nats-server:

* under the kernel's own memory-deny-write-execute (prctl PR_SET_MDWE, inherited across exec):
  no writable and executable mapping, and no mapping made executable later; and
* under strace, recording every socket it creates: only AF_INET, AF_INET6 and AF_UNIX.

systemd 252 applies MemoryDenyWriteExecute with a seccomp filter of the same two rules; PR_SET_MDWE
is how a test can apply them without systemd. The test proves the restriction was in force by
having the same wrapper refuse a writable executable mapping.
"""

from __future__ import annotations

import asyncio
import ctypes
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import nats
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from choria_broker_adapters.devtools.natsserver import NatsServer
from tests.runtime_support import broker_conf, example, stored_messages, wait_until

KEYS = Path(__file__).parent / "data" / "protocol" / "examples" / "keys"
TOPIC = "choria.broadcast.agent.registration"
PR_SET_MDWE = 65
PR_MDWE_REFUSE_EXEC_GAIN = 1
# Sets memory-deny-write-execute for itself and whatever it executes, then executes argv[1:].
MDWE_WRAPPER = f"""
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl({PR_SET_MDWE}, {PR_MDWE_REFUSE_EXEC_GAIN}, 0, 0, 0) != 0:
    sys.exit(f"prctl(PR_SET_MDWE) failed: errno {{ctypes.get_errno()}}")
os.execv(sys.argv[1], sys.argv[1:])
"""
ALLOWED_FAMILIES = {"AF_INET", "AF_INET6", "AF_UNIX"}


def kernel_has_mdwe() -> bool:
    """PR_SET_MDWE exists from Linux 6.3; PR_GET_MDWE (66) answers without changing anything."""
    return ctypes.CDLL(None, use_errno=True).prctl(66, 0, 0, 0, 0) >= 0


def wrapped(*command: str) -> list[str]:
    return [sys.executable, "-c", MDWE_WRAPPER, *command]


@pytest.mark.skipif(not kernel_has_mdwe(), reason="the kernel has no PR_SET_MDWE (Linux 6.3+)")
def test_the_wrapper_really_refuses_writable_executable_memory() -> None:
    probe = "import mmap; mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)"
    refused = subprocess.run(wrapped(sys.executable, "-c", probe), capture_output=True, text=True, timeout=30)
    assert refused.returncode == 1 and "PermissionError" in refused.stderr, refused.stderr
    allowed = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=30)
    assert allowed.returncode == 0, allowed.stderr


@pytest.mark.skipif(not kernel_has_mdwe(), reason="the kernel has no PR_SET_MDWE (Linux 6.3+)")
@pytest.mark.skipif(shutil.which("strace") is None, reason="strace is not installed")
@pytest.mark.parametrize("version", [1, 2])
async def test_the_runtime_works_without_writable_executable_memory_and_with_three_socket_families(
    nats_server_factory: Callable[..., NatsServer], tmp_path: Path, version: int
) -> None:
    server = nats_server_factory(jetstream=True)
    if version == 1:
        example_name = "v1_registration_inventory_plain"
        trust = {"ingest.verify_ca": str(KEYS / "ca.pem")}
        security = ""
    else:
        example_name = "v2_registration_inventory_gzip"
        trust = {}
        seed = bytes.fromhex((KEYS / "issuer.seed").read_text().strip())
        issuer = Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes_raw().hex()
        security = (
            "plugin.security.provider = choria\nplugin.security.issuer.names = choria\n"
            f"plugin.security.issuer.choria.public = {issuer}\n"
        )
    config = tmp_path / "broker.conf"
    config.write_text(
        broker_conf(
            middleware=server.address,
            adapters={
                "nodes": {
                    "type": "choria_streams",
                    "ingest.topic": TOPIC,
                    "ingest.protocol": "request",
                    "ingest.verify": "enforce",
                    **trust,
                    "stream.topic": "choria.node_metadata.%s",
                },
            },
            extra="plugin.choria.stats_port = 0\n" + security,
        )
    )
    nc = await nats.connect(server.url)
    js = nc.jetstream()
    await js.add_stream(name="NODES", subjects=["choria.node_metadata.>"])
    trace = tmp_path / "sockets.trace"
    log = tmp_path / "runtime.log"
    runtime_command = [
        str(Path(sys.executable).parent / "choria-broker-adapters"),
        "run", "--config", str(config), "--disable-tls",
    ]  # fmt: skip
    strace = shutil.which("strace") or "strace"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [strace, "-f", "-qq", "-e", "trace=socket", "-o", str(trace), *wrapped(*runtime_command)],
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:

        async def subscribed() -> bool:
            return f"Subscribed to {TOPIC}" in log.read_text(errors="replace")

        await wait_until(subscribed, 30, "the runtime's subscriptions")
        wire, _, expected = example(example_name)

        # The runtime logs a subscription before the server has it, so the message is sent
        # again until it is stored; every copy has the same Nats-Msg-Id, so JetStream keeps one.
        async def stored() -> bool:
            if (await js.stream_info("NODES")).state.messages:
                return True
            await nc.publish(TOPIC, wire)
            await nc.flush()
            return False

        try:
            await wait_until(stored, 45, "the message in the stream", interval=0.5)
        except AssertionError as error:
            raise AssertionError(f"{error}\n{log.read_text(errors='replace')}") from None
        [(subject, body)] = await stored_messages(js, "NODES")
        assert body == expected
        assert subject == f"choria.node_metadata.{json.loads(expected)['sender']}"
        # SIGTERM to the runtime itself (strace's child): it drains and exits 0, and strace
        # exits with its status.
        [runtime_pid] = Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split()
        # The compiled dependencies in question were loaded and used in this process.
        maps = Path(f"/proc/{runtime_pid}/maps").read_text()
        for library in ("/uvloop/loop.", "/orjson/orjson.", "/cryptography/hazmat/bindings/_rust."):
            assert library in maps, library
        os.kill(int(runtime_pid), signal.SIGTERM)
        assert await asyncio.to_thread(process.wait, 30) == 0, log.read_text(errors="replace")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
        await nc.close()

    text = log.read_text(errors="replace")
    assert "PermissionError" not in text and "Traceback" not in text, text
    assert "unverified" not in text, text
    families = set(re.findall(r"socket\((AF_[A-Z0-9]+|PF_[A-Z0-9]+)", trace.read_text()))
    assert "AF_INET" in families, trace.read_text()
    assert families <= ALLOWED_FAMILIES, families
