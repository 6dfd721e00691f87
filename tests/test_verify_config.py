"""ingest.verify configuration: keys, issuers, `check`/`run` exit 78 on missing trust, `decode --verify`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from choria_broker_adapters.cli import EXIT_CONFIG, main
from choria_broker_adapters.config.brokerconf import RawConfig, parse_text
from choria_broker_adapters.config.settings import ConfigError, Settings, build_settings
from choria_broker_adapters.config.trust import load_trust
from tests import verify_support as vs

EXAMPLES = Path(__file__).parent / "data" / "protocol" / "examples"
KEYS = EXAMPLES / "keys"
ISSUER_HEX = vs.public_hex(
    vs.Ed25519PrivateKey.from_private_bytes(bytes.fromhex((KEYS / "issuer.seed").read_text().strip()))
)
BASE = (
    "identity = adapters1.example.net\n"
    "plugin.choria.middleware_hosts = nats1.example.net:4222\n"
    "plugin.choria.adapters = node_data\n"
    "plugin.choria.adapter.node_data.type = jetstream\n"
    "plugin.choria.adapter.node_data.ingest.topic = mcollective.broadcast.agent.registration\n"
    "plugin.choria.adapter.node_data.ingest.protocol = request\n"
)
CHORIA_PROVIDER = (
    "plugin.security.provider = choria\n"
    "plugin.security.choria.certificate = /tls/cert.pem\n"
    "plugin.security.choria.key = /tls/key.pem\n"
    "plugin.security.choria.ca = /tls/ca.pem\n"
)


def build(text: str) -> Settings:
    raw = RawConfig()
    raw.merge(*parse_text(text, file="broker.conf"))
    return build_settings(raw, config_file="broker.conf", environ={})


def test_verify_defaults_to_off_and_takes_the_three_modes() -> None:
    assert build(BASE).adapters["node_data"].ingest_verify == "off"
    for mode in ("off", "warn", "enforce"):
        adapter = build(BASE + f"plugin.choria.adapter.node_data.ingest.verify = {mode}\n").adapters[
            "node_data"
        ]
        assert adapter.ingest_verify == mode


def test_a_bad_mode_names_file_line_and_key() -> None:
    with pytest.raises(ConfigError) as raised:
        build(BASE + "plugin.choria.adapter.node_data.ingest.verify = enforcing\n")
    (issue,) = raised.value.issues
    assert issue.key == "plugin.choria.adapter.node_data.ingest.verify"
    assert issue.source is not None and issue.source.line == 7
    assert "expected one of off, warn, enforce (did you mean enforce?)" in issue.message


def test_the_ca_is_the_providers_unless_verify_ca_overrides_it() -> None:
    settings = build(BASE + "plugin.choria.ssldir = /ssl\n")
    adapter = settings.adapters["node_data"]
    assert settings.verify_ca(adapter) == ("/ssl/certs/ca.pem", "plugin.choria.ssldir")
    override = build(BASE + "plugin.choria.adapter.node_data.ingest.verify_ca = /etc/ca.pem\n")
    assert override.verify_ca(override.adapters["node_data"]) == (
        "/etc/ca.pem",
        "plugin.choria.adapter.node_data.ingest.verify_ca",
    )


def test_issuers_are_read_and_validated() -> None:
    settings = build(
        BASE
        + CHORIA_PROVIDER
        + "plugin.security.issuer.names = choria, other\n"
        + f"plugin.security.issuer.choria.public = {ISSUER_HEX}\n"
        + f"plugin.security.issuer.other.public = {ISSUER_HEX.upper()}\n"
        + "plugin.choria.adapter.node_data.ingest.verify = enforce\n"
    )
    assert settings.issuers == {"choria": ISSUER_HEX, "other": ISSUER_HEX}
    assert set(load_trust(settings, settings.adapters["node_data"]).issuers) == {"choria", "other"}

    with pytest.raises(ConfigError) as raised:
        build(
            BASE
            + "plugin.security.issuer.names = choria, missing\n"
            + "plugin.security.issuer.choria.public = abcd\n"
        )
    assert {(issue.key, issue.message.split(";")[0]) for issue in raised.value.issues} == {
        ("plugin.security.issuer.choria.public", "'abcd' is not an ed25519 public key"),
        (
            "plugin.security.issuer.missing.public",
            "issuer 'missing' is listed in plugin.security.issuer.names but has no public key",
        ),
    }


def test_v2_verification_without_issuers_is_an_error() -> None:
    with pytest.raises(ConfigError) as raised:
        build(BASE + CHORIA_PROVIDER + "plugin.choria.adapter.node_data.ingest.verify = warn\n")
    (issue,) = raised.value.issues
    assert issue.key == "plugin.security.issuer.names"


@pytest.mark.parametrize(
    ("ca_line", "key", "message"),
    [
        (
            "plugin.choria.adapter.node_data.ingest.verify_ca = {missing}\n",
            "plugin.choria.adapter.node_data.ingest.verify_ca",
            "cannot read",
        ),
        (
            "plugin.choria.adapter.node_data.ingest.verify_ca = {junk}\n",
            "plugin.choria.adapter.node_data.ingest.verify_ca",
            "is not a PEM certificate bundle",
        ),
        ("plugin.choria.ssldir = {tmp}\n", "plugin.choria.ssldir", "cannot read"),
    ],
)
def test_check_and_run_exit_78_naming_the_key_when_the_ca_is_unusable(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], ca_line: str, key: str, message: str
) -> None:
    (tmp_path / "junk.pem").write_text("junk\n")
    line = ca_line.format(missing=tmp_path / "missing.pem", junk=tmp_path / "junk.pem", tmp=tmp_path)
    config = tmp_path / "broker.conf"
    config.write_text(BASE + "plugin.choria.adapter.node_data.ingest.verify = enforce\n" + line)
    assert main(["check", "--config", str(config)]) == EXIT_CONFIG
    err = capsys.readouterr().err
    assert f"{key}: CA bundle for plugin.choria.adapter.node_data.ingest.verify" in err or key in err
    assert message in err
    assert main(["check", "--config", str(config), "--json"]) == EXIT_CONFIG
    document = json.loads(capsys.readouterr().out)
    assert [error["key"] for error in document["errors"]] == [key]
    # run refuses before any connection (the middleware host does not exist)
    assert main(["run", "--config", str(config), "--disable-tls"]) == EXIT_CONFIG
    assert key in capsys.readouterr().err


def test_check_accepts_a_readable_ca_and_shows_the_keys(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "broker.conf"
    config.write_text(
        BASE
        + "plugin.choria.adapter.node_data.ingest.verify = warn\n"
        + f"plugin.choria.adapter.node_data.ingest.verify_ca = {KEYS / 'ca.pem'}\n"
    )
    assert main(["check", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "plugin.choria.adapter.node_data.ingest.verify" in out and "= warn" in out


# -- decode --verify --------------------------------------------------------------------------


def test_decode_prints_the_verdict_and_reason(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = vs.pki()
    ca = p.write_ca(tmp_path / "ca.pem")
    good, expected = vs.v1_registration(p.node1, sender="node1.example.net")
    spoofed, _ = vs.v1_registration(p.node2, sender="node1.example.net")
    (tmp_path / "good.json").write_bytes(good)
    (tmp_path / "spoofed.json").write_bytes(spoofed)

    assert main(["decode", "--verify", "enforce", "--verify-ca", str(ca), str(tmp_path / "good.json")]) == 0
    captured = capsys.readouterr()
    assert captured.out.encode() == b"choria.node_metadata.node1.example.net\n" + expected + b"\n"
    assert captured.err == "verify: verified\n"

    assert (
        main(["decode", "--verify", "enforce", "--verify-ca", str(ca), str(tmp_path / "spoofed.json")]) == 1
    )
    captured = capsys.readouterr()
    assert captured.out == ""
    reason = "certificate name node2.example.net is not the sender node1.example.net"
    assert captured.err == f"verify: failed (name): {reason}\ndiscarded as unverified: {reason}\n"

    assert main(["decode", "--verify", "warn", "--verify-ca", str(ca), str(tmp_path / "spoofed.json")]) == 0
    assert capsys.readouterr().err == f"verify: failed (name): {reason}\n"


def test_decode_verifies_v2_with_issuers_and_refuses_bad_options(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    wire = EXAMPLES / "v2_registration_inventory_gzip" / "wire.transport.json"
    args = ["decode", "--security-provider", "choria", "--verify", "enforce"]
    assert main([*args, "--issuer", f"choria={ISSUER_HEX}", str(wire)]) == 0
    assert capsys.readouterr().err == "verify: verified\n"
    assert main([*args, "--issuer", "choria=zz", str(wire)]) == 2
    assert "--issuer choria:" in capsys.readouterr().err
    assert main([*args, str(wire)]) == 2
    assert "--issuer NAME=HEX" in capsys.readouterr().err
    assert main(["decode", "--verify", "enforce", "--verify-ca", str(tmp_path / "none.pem"), str(wire)]) == 2
    assert "--verify-ca: cannot read" in capsys.readouterr().err
