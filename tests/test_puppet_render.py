"""Real `puppet apply` of class choria::broker against the Python renderer, byte for byte.

Each data set in tests/data/render/ is hiera-style YAML. It reaches Puppet either as the site's
hiera data (with `include choria::broker`) or as the parameters of a resource-like class
declaration in a manifest; either way the file Puppet writes must equal
`render_broker_config(data)`; so must one data set built here, protocol v2 with the adapter
keys that came with it (`v2_with_new_keys`). Bad data must fail under both, each naming the key.

Every `puppet apply` runs isolated in its own temporary confdir/vardir/codedir/ssldir/publicdir
with its own hiera.yaml, facts from a JSON file (no facter run, nothing read from the host), and
a module path holding only a `choria` symlink to this repository's puppet/ directory. The runs
are independent, so they go two at a time.
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import shutil
import subprocess
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from choria_broker_adapters.config.render import RenderError, render_broker_config
from choria_broker_adapters.config.settings import load_settings

pytestmark = [
    pytest.mark.puppet,
    pytest.mark.skipif(shutil.which("puppet") is None, reason="puppet is not installed (scripts/setup)"),
    # The first test waits for the module fixture, which runs every apply below (a few seconds
    # each, two at a time); on a loaded machine that exceeds the suite's per-test default.
    pytest.mark.timeout(360),
]

REPO = Path(__file__).resolve().parents[1]
MODULE = REPO / "puppet"
DATA = Path(__file__).parent / "data" / "render"
CERTNAME = "puppet-test.example.net"
PARALLEL_RUNS = 2


@dataclass(frozen=True)
class PuppetRun:
    returncode: int
    stdout: str
    stderr: str
    config_file: Path
    seconds: float

    @property
    def content(self) -> str | None:
        return self.config_file.read_text(encoding="utf-8") if self.config_file.exists() else None


def puppet_literal(value: Any) -> str:
    """A Python value from YAML as Puppet source."""
    if value is None:
        return "undef"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    if isinstance(value, list):
        return "[" + ", ".join(puppet_literal(item) for item in value) + "]"
    if isinstance(value, Mapping):
        pairs = (f"{puppet_literal(key)} => {puppet_literal(item)}" for key, item in value.items())
        return "{" + ", ".join(pairs) + "}"
    raise TypeError(f"no Puppet literal for {value!r}")


def run_keys(config_file: Path) -> dict[str, Any]:
    """What every test run sets: a file in the run's directory, no install, no service, owned by us."""
    return {
        "choria::broker::config_file": str(config_file),
        "choria::broker::manage_package": False,
        "choria::broker::manage_service": False,
        "choria::broker::config_owner": pwd.getpwuid(os.getuid()).pw_name,
        "choria::broker::config_group": grp.getgrgid(os.getgid()).gr_name,
    }


def puppet_apply(
    workdir: Path,
    data: Mapping[str, Any],
    *,
    via: str,
    overrides: Mapping[str, Any] | None = None,
    manifest_tail: str = "",
    environment: Mapping[str, str] | None = None,
) -> PuppetRun:
    """Apply choria::broker with `data` (hiera keys) given `via` "hiera" or "manifest".

    `overrides` replace what `run_keys` sets, `manifest_tail` is appended to site.pp and
    `environment` adds variables to puppet's (and so its commands') environment.
    """
    for name in ("conf", "var", "code", "ssl", "public", "modules", "hieradata", "facts/facts"):
        (workdir / name).mkdir(parents=True, exist_ok=True)
    if not (workdir / "modules" / "choria").exists():
        (workdir / "modules" / "choria").symlink_to(MODULE)
    # Facts from JSON (the facts_terminus json reads <client_datadir>/facts/<certname>.json);
    # clientcert is what puppet apply turns into $trusted['certname'].
    facts = {
        "name": CERTNAME,
        "values": {
            "clientcert": CERTNAME,
            "fqdn": CERTNAME,
            "kernel": "Linux",
            "os": {"family": "Debian", "name": "Debian", "release": {"major": "12"}},
            "networking": {"fqdn": CERTNAME, "domain": "example.net"},
        },
    }
    (workdir / "facts" / "facts" / f"{CERTNAME}.json").write_text(json.dumps(facts))
    (workdir / "hiera.yaml").write_text(
        yaml.safe_dump(
            {
                "version": 5,
                "defaults": {"datadir": str(workdir / "hieradata"), "data_hash": "yaml_data"},
                "hierarchy": [{"name": "site", "path": "site.yaml"}],
            }
        )
    )
    config_file = workdir / "broker.conf"
    keys = {**run_keys(config_file), **(overrides or {})}
    if via == "hiera":
        hiera = {**data, **keys}
        manifest = "include choria::broker\n"
    elif via == "manifest":
        hiera = {}
        parameters = {**data, **keys}
        body = "".join(
            f"  {key.removeprefix('choria::broker::')} => {puppet_literal(value)},\n"
            for key, value in parameters.items()
            if key.startswith("choria::broker::")
        )
        manifest = f"class {{ 'choria::broker':\n{body}}}\n"
    else:
        raise ValueError(via)
    (workdir / "hieradata" / "site.yaml").write_text(yaml.safe_dump(hiera))
    (workdir / "site.pp").write_text(manifest + manifest_tail)
    command = [
        "puppet", "apply",
        "--confdir", str(workdir / "conf"),
        "--vardir", str(workdir / "var"),
        "--codedir", str(workdir / "code"),
        "--ssldir", str(workdir / "ssl"),
        "--publicdir", str(workdir / "public"),
        "--hiera_config", str(workdir / "hiera.yaml"),
        "--modulepath", str(workdir / "modules"),
        "--certname", CERTNAME,
        "--facts_terminus", "json",
        "--client_datadir", str(workdir / "facts"),
        "--detailed-exitcodes",
        "--color", "false",
        str(workdir / "site.pp"),
    ]  # fmt: skip
    started = time.monotonic()
    # HOME points into the run so nothing under the real home directory is read or written.
    env = {**os.environ, "HOME": str(workdir), "LANG": "C.UTF-8", **(environment or {})}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=240)
    return PuppetRun(result.returncode, result.stdout, result.stderr, config_file, time.monotonic() - started)


def load(name: str) -> dict[str, Any]:
    return yaml.safe_load((DATA / f"{name}.yaml").read_text(encoding="utf-8"))


# (data set, how Puppet gets it). Every file in tests/data/render/ appears at least once.
VALID_CASES: list[tuple[str, str]] = [
    ("docs_node_data", "manifest"),
    ("docs_node_data", "hiera"),
    ("top_level_type", "manifest"),
    ("two_adapters_unsorted", "hiera"),
    ("two_adapters_unsorted", "manifest"),
    ("minimal_defaults", "hiera"),
    ("all_optional_keys", "hiera"),
    ("file_security", "manifest"),
    ("puppet_ssldir_servers", "manifest"),
    ("many_adapters", "hiera"),
    ("type_in_both_places", "manifest"),
    ("large_scale_docs", "hiera"),
    ("durations_and_limits", "manifest"),
    ("site_hiera_with_other_classes", "hiera"),
    ("choria_v2_provider", "hiera"),
    ("choria_v2_provider", "manifest"),
]

NODE_DATA = {"type": "choria_streams", "ingest": {"topic": "choria.discovery", "protocol": "request"}}


def v2_with_new_keys() -> dict[str, Any]:
    """Protocol v2 together with the adapter keys the runtime gained with it (verification,
    publish mode, stream settings), in one file: the provider's lines and the adapters' lines
    come from different parts of both renderers, so each data set alone would not show them
    meeting. Two adapters, given unsorted, one with `type` inside `stream`."""
    data = load("choria_v2_provider")
    data["choria::broker::adapters"] = {
        "replies": {
            "ingest": {"topic": "choria.reply.>", "protocol": "reply", "verify": "warn"},
            "stream": {
                "type": "jetstream",
                "topic": "choria.replies.%s",
                "publish": "acked",
                "ack_timeout": "2s",
                "retry_budget": "1m",
                "max_pending": 256,
            },
        },
        "node_data": {
            "type": "choria_streams",
            "queue_len": 20000,
            "shutdown_grace": 20,
            "ingest": {
                "topic": "choria.broadcast.agent.registration",
                "protocol": "request",
                "verify": "enforce",
                "workers": 5,
            },
            "stream": {
                "topic": "choria.node_metadata.%s",
                "publish": "batched",
                "name": "CHORIA_NODE_DATA",
                "subjects": ["choria.node_metadata.>"],
                "max_msgs_per_subject": 1,
                "duplicate_window": "10m",
            },
        },
    }
    return data


def bad_adapter(name: str, **adapter: Any) -> dict[str, Any]:
    return {"choria::broker::adapters": {name: {**NODE_DATA, **adapter}}}


@dataclass(frozen=True)
class BadCase:
    case_id: str
    data: dict[str, Any]
    puppet_message: str  # must appear in puppet's error output
    key: str  # RenderError.key
    # Type mismatches of class parameters are all reported by one failed compilation, so those
    # cases share one puppet run (each under its own adapter name or parameter); a check in the
    # class body stops at the first failure and needs a run of its own.
    shares_run: bool = True


BAD_CASES: list[BadCase] = [
    BadCase(
        "type_not_in_enum",
        bad_adapter("type_not_in_enum", type="nats_stream"),
        "entry 'type_not_in_enum' entry 'type' expects a match for Choria::Adapter::Type",
        "choria::broker::adapters.type_not_in_enum.type",
    ),
    BadCase(
        "stream_type_not_in_enum",
        {
            "choria::broker::adapters": {
                "stream_type": {"ingest": {"topic": "a"}, "stream": {"type": "Jetstream"}}
            }
        },
        "entry 'stream_type' entry 'stream' entry 'type' expects a match for Choria::Adapter::Type",
        "choria::broker::adapters.stream_type.stream.type",
    ),
    BadCase(
        "ingest_workers_0",
        bad_adapter("ingest_workers_0", ingest={"topic": "a", "workers": 0}),
        "entry 'ingest_workers_0' entry 'ingest' entry 'workers' expects an Integer[1, 100] value",
        "choria::broker::adapters.ingest_workers_0.ingest.workers",
    ),
    BadCase(
        "stream_workers_101",
        bad_adapter("stream_workers_101", stream={"workers": 101}),
        "entry 'stream_workers_101' entry 'stream' entry 'workers' expects an Integer[1, 100] value",
        "choria::broker::adapters.stream_workers_101.stream.workers",
    ),
    BadCase(
        "newline_in_topic",
        bad_adapter("newline_in_topic", ingest={"topic": "x\nplugin.choria.adapters = evil"}),
        "entry 'newline_in_topic' entry 'ingest' entry 'topic' expects a match for Choria::Subject",
        "choria::broker::adapters.newline_in_topic.ingest.topic",
    ),
    BadCase(
        "carriage_return_in_identity",
        {"choria::broker::identity": "broker1\rplugin.choria.adapters = evil"},
        "parameter 'identity' expects a match for Choria::SingleLine",
        "choria::broker::identity",
    ),
    BadCase(
        "bad_adapter_name",
        {"choria::broker::adapters": {"node data": NODE_DATA}},
        "parameter 'adapters' key of entry 'node data' expects a match for Choria::Name",
        "choria::broker::adapters",
    ),
    BadCase(
        "quoted_workers",
        bad_adapter("quoted_workers", stream={"workers": "10"}),
        "entry 'quoted_workers' entry 'stream' entry 'workers' expects an Integer value, got String",
        "choria::broker::adapters.quoted_workers.stream.workers",
    ),
    BadCase(
        "quoted_stats_port",
        {"choria::broker::stats_port": "8222"},
        "parameter 'stats_port' expects an Integer value, got String",
        "choria::broker::stats_port",
    ),
    BadCase(
        "server_without_port",
        bad_adapter("server_without_port", stream={"servers": ["js1.example.net"]}),
        "entry 'server_without_port' entry 'stream' entry 'servers' index 0 expects a match for Choria::Se",
        "choria::broker::adapters.server_without_port.stream.servers[0]",
    ),
    BadCase(
        "undef_optional_key",
        bad_adapter("undef_optional_key", queue_len=None),
        "entry 'undef_optional_key' entry 'queue_len' expects an Integer value, got Undef",
        "choria::broker::adapters.undef_optional_key.queue_len",
    ),
    BadCase(
        "types_disagree",
        bad_adapter("node_data", type="jetstream", stream={"type": "choria_streams"}),
        "choria::broker::adapters.node_data.type: 'jetstream' disagrees with stream.type 'choria_streams'",
        "choria::broker::adapters.node_data.type",
        shares_run=False,
    ),
    BadCase(
        "type_missing",
        {"choria::broker::adapters": {"node_data": {"ingest": {"topic": "a"}}}},
        "choria::broker::adapters.node_data.type: expects a value",
        "choria::broker::adapters.node_data.type",
        shares_run=False,
    ),
    BadCase(
        "file_provider_without_key",
        {
            "choria::broker::security_provider": "file",
            "choria::broker::file_certificate": "/etc/choria/cert.pem",
            "choria::broker::file_ca": "/etc/choria/ca.pem",
        },
        "choria::broker::file_key: expects a path when security_provider is 'file'",
        "choria::broker::file_key",
        shares_run=False,
    ),
    BadCase(
        "choria_provider_without_ca",
        {
            "choria::broker::security_provider": "choria",
            "choria::broker::issuers": {"org": "ab" * 32},
            "choria::broker::choria_certificate": "/etc/choria/cert.pem",
            "choria::broker::choria_key": "/etc/choria/key.pem",
        },
        "choria::broker::choria_ca: expects a path when security_provider is 'choria'",
        "choria::broker::choria_ca",
        shares_run=False,
    ),
    BadCase(
        "choria_provider_without_issuers",
        {
            "choria::broker::security_provider": "choria",
            "choria::broker::choria_certificate": "/etc/choria/cert.pem",
            "choria::broker::choria_key": "/etc/choria/key.pem",
            "choria::broker::choria_ca": "/etc/choria/ca.pem",
        },
        "choria::broker::issuers: expects at least one issuer when security_provider is 'choria'",
        "choria::broker::issuers",
        shares_run=False,
    ),
    BadCase(
        "issuer_key_not_hex",
        {"choria::broker::issuers": {"org": "z" * 64}},
        "parameter 'issuers' entry 'org' expects a match for Choria::IssuerKey",
        "choria::broker::issuers.org",
    ),
    BadCase(
        "package_source_other_version",
        {
            "choria::broker::package_source": "/srv/choria_broker_adapters-0.2.0-py3-none-any.whl",
            "choria::broker::package_ensure": "0.1.0",
        },
        "choria::broker::package_ensure: '0.1.0' disagrees with choria_broker_adapters-0.2.0-py3-none-any",
        "choria::broker::package_ensure",
        shares_run=False,
    ),
]


def bad_run_id(case: BadCase) -> str:
    return "bad-type-errors" if case.shares_run else f"bad-{case.case_id}"


def combined_bad_data() -> dict[str, Any]:
    """Every type-mismatch case in one set of class parameters."""
    combined: dict[str, Any] = {"choria::broker::adapters": {}}
    for case in BAD_CASES:
        if case.shares_run:
            for key, value in case.data.items():
                if key == "choria::broker::adapters":
                    combined[key].update(value)
                else:
                    combined[key] = value
    return combined


def _case_id(case: tuple[str, str]) -> str:
    return f"{case[0]}-{case[1]}"


@pytest.fixture(scope="module")
def puppet_runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, PuppetRun]]:
    """Every valid and bad case applied once, two at a time; keyed by case id."""
    root = tmp_path_factory.mktemp("puppet")
    jobs: dict[str, tuple[dict[str, Any], str]] = {
        _case_id(case): (load(case[0]), case[1]) for case in VALID_CASES
    }
    jobs["bad-type-errors"] = (combined_bad_data(), "hiera")
    jobs.update({bad_run_id(case): (case.data, "hiera") for case in BAD_CASES if not case.shares_run})
    jobs["bad-newline_in_topic-manifest"] = (
        bad_adapter("node_data", ingest={"topic": "x\ny = z"}),
        "manifest",
    )
    jobs["certname_identity"] = ({"choria::broker::adapters": {"node_data": NODE_DATA}}, "hiera")
    for via in ("hiera", "manifest"):
        jobs[f"v2_with_new_keys-{via}"] = (v2_with_new_keys(), via)
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=PARALLEL_RUNS) as pool:
        futures = {
            case_id: pool.submit(puppet_apply, root / case_id, data, via=via)
            for case_id, (data, via) in jobs.items()
        }
        runs = {case_id: future.result() for case_id, future in futures.items()}
    elapsed = time.monotonic() - started
    slowest = max(run.seconds for run in runs.values())
    print(f"\n{len(runs)} puppet apply runs in {elapsed:.1f} s (slowest {slowest:.1f} s)")
    yield runs


@pytest.mark.parametrize("case", VALID_CASES, ids=_case_id)
def test_puppet_and_python_write_the_same_bytes(
    case: tuple[str, str], puppet_runs: dict[str, PuppetRun]
) -> None:
    run = puppet_runs[_case_id(case)]
    # --detailed-exitcodes: 2 = changes applied without failures (the file was created).
    assert run.returncode == 2, run.stderr + run.stdout
    assert run.content == render_broker_config(load(case[0]))
    assert run.config_file.stat().st_mode & 0o777 == 0o640


@pytest.mark.parametrize("via", ["hiera", "manifest"])
def test_v2_provider_and_the_new_adapter_keys_give_the_same_bytes(
    via: str, puppet_runs: dict[str, PuppetRun]
) -> None:
    run = puppet_runs[f"v2_with_new_keys-{via}"]
    assert run.returncode == 2, run.stderr + run.stdout
    assert run.content == render_broker_config(v2_with_new_keys())
    content = run.content or ""
    for line in (
        "plugin.security.provider = choria",
        "plugin.security.issuer.names = choria, production",
        "plugin.choria.adapter.node_data.ingest.verify = enforce",
        "plugin.choria.adapter.node_data.stream.publish = batched",
        "plugin.choria.adapter.replies.type = jetstream",
        "plugin.choria.adapter.replies.stream.publish = acked",
    ):
        assert f"\n{line}\n" in content, line
    # And the runtime reads that file as meant: v2 issuers, each adapter's verification.
    settings = load_settings(run.config_file, environ={})
    assert (settings.protocol_version, sorted(settings.issuers)) == (2, ["choria", "production"])
    modes = {name: (a.ingest_verify, a.stream_publish) for name, a in settings.adapters.items()}
    assert modes == {"node_data": ("enforce", "batched"), "replies": ("warn", "acked")}


def test_every_data_set_is_in_the_table() -> None:
    assert {path.stem for path in DATA.glob("*.yaml")} == {name for name, _ in VALID_CASES}


def test_the_documented_form_renders_the_adapter_level_type(puppet_runs: dict[str, PuppetRun]) -> None:
    content = puppet_runs["docs_node_data-manifest"].content or ""
    assert "plugin.choria.adapter.node_data.type = choria_streams\n" in content
    assert "stream.type" not in content


def test_empty_servers_are_left_out(puppet_runs: dict[str, PuppetRun]) -> None:
    content = puppet_runs["two_adapters_unsorted-hiera"].content or ""
    assert "plugin.choria.adapter.replies.stream.servers" not in content
    servers = "choria1.example.net:4222, choria2.example.net:4222"
    assert f"plugin.choria.adapter.discovery.stream.servers = {servers}\n" in content


def test_hash_order_does_not_change_the_file(puppet_runs: dict[str, PuppetRun]) -> None:
    """Sample 02's keys are unsorted; a sorted copy of the data must give the same file."""

    def sorted_deep(value: Any) -> Any:
        if isinstance(value, dict):
            return {key: sorted_deep(value[key]) for key in sorted(value)}
        return value

    assert puppet_runs["two_adapters_unsorted-hiera"].content == render_broker_config(
        sorted_deep(load("two_adapters_unsorted"))
    )


def test_puppet_defaults_identity_to_the_certname(puppet_runs: dict[str, PuppetRun]) -> None:
    run = puppet_runs["certname_identity"]
    assert run.returncode == 2, run.stderr
    expected = render_broker_config(
        {"choria::broker::identity": CERTNAME, "choria::broker::adapters": {"node_data": NODE_DATA}}
    )
    assert run.content == expected


@pytest.mark.parametrize("case", BAD_CASES, ids=[case.case_id for case in BAD_CASES])
def test_bad_data_fails_in_puppet_and_python_naming_the_key(
    case: BadCase, puppet_runs: dict[str, PuppetRun]
) -> None:
    run = puppet_runs[bad_run_id(case)]
    assert run.returncode == 1
    assert case.puppet_message in run.stderr, run.stderr
    assert run.content is None
    with pytest.raises(RenderError) as raised:
        render_broker_config(case.data)
    assert raised.value.key == case.key
    assert str(raised.value).startswith(f"{case.key}: ")


def test_injection_is_rejected_from_a_manifest_too(puppet_runs: dict[str, PuppetRun]) -> None:
    run = puppet_runs["bad-newline_in_topic-manifest"]
    assert run.returncode == 1
    assert "entry 'node_data' entry 'ingest' entry 'topic' expects a match for Choria::Subject" in run.stderr


def test_module_defaults_match_the_python_renderer() -> None:
    from choria_broker_adapters.config.render import MODULE_DEFAULTS

    common = yaml.safe_load((MODULE / "data" / "common.yaml").read_text())
    defaults = {
        key.removeprefix("choria::broker::"): value
        for key, value in common.items()
        if key != "lookup_options"
    }
    # Puppet's identity default is the node's certname, which render cannot know.
    assert defaults.pop("identity") == "%{trusted.certname}"
    assert defaults == {key: value for key, value in MODULE_DEFAULTS.items() if key != "identity"}


def test_a_second_apply_changes_nothing(tmp_path: Path) -> None:
    """Same data, same bytes: the file is not rewritten, so the service would not restart."""
    data = load("two_adapters_unsorted")
    first = puppet_apply(tmp_path, data, via="hiera")
    assert first.returncode == 2, first.stderr
    second = puppet_apply(tmp_path, data, via="hiera")
    # --detailed-exitcodes: 0 = no changes, no failures.
    assert second.returncode == 0, second.stderr + second.stdout
