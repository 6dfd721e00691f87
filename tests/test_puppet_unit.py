"""The systemd unit Puppet writes is one systemd accepts, and hardened as the README says.

A real `puppet apply` (isolated, as in test_puppet_render.py) writes the unit for this
checkout's own console script; `systemd-analyze verify` must accept it without a word, and
`systemd-analyze security --offline=true` must count each hardening setting as applied. Neither
needs a running systemd. The service resource gets Puppet's `base` provider and the unit file
goes into the run's directory, since no systemd runs here.

The service runs as a user other than the default root (`daemon` when the tests run as root,
else the user running them), so the unit shows `service_user`/`service_group` at work.
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import subprocess
from pathlib import Path

import pytest

from choria_broker_adapters.config.settings import load_settings
from choria_broker_adapters.core.exits import EXIT_CONFIG
from choria_broker_adapters.process.limits import descriptor_need
from tests.test_puppet_render import REPO, puppet_apply

pytestmark = [
    pytest.mark.puppet,
    pytest.mark.skipif(shutil.which("puppet") is None, reason="puppet is not installed (scripts/setup)"),
    pytest.mark.skipif(
        shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed (scripts/setup)"
    ),
]

SERVICE = "choria-broker-adapters"
EXECUTABLE = REPO / ".venv" / "bin" / "choria-broker-adapters"
NODE_DATA = {"type": "choria_streams", "ingest": {"topic": "choria.discovery"}}
# What `systemd-analyze security` calls each setting the unit makes (a ✓ line each).
HARDENED = [
    "NoNewPrivileges=",
    "ProtectSystem=",
    "ProtectHome=",
    "PrivateTmp=",
    "ProtectKernelTunables=",
    "ProtectControlGroups=",
    "RestrictAddressFamilies=~AF_PACKET",
    "RestrictAddressFamilies=~AF_NETLINK",
    "LockPersonality=",
    "MemoryDenyWriteExecute=",
]


def service_identity() -> tuple[str, str]:
    """A user and group other than root that Puppet, run by this user, may give the log file."""
    if os.getuid() == 0:
        try:
            return pwd.getpwnam("daemon").pw_name, grp.getgrnam("daemon").gr_name
        except KeyError:
            pytest.skip("no daemon user or group to run the service as")
    return pwd.getpwuid(os.getuid()).pw_name, grp.getgrgid(os.getgid()).gr_name


USER, GROUP = service_identity()


def sections(unit: Path) -> dict[str, list[tuple[str, str]]]:
    """The unit's `key=value` lines by section, in order, repeated keys kept (systemd's syntax:
    `#` starts a comment line, no continuation lines in this unit)."""
    found: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] = []
    for line in unit.read_text().splitlines():
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = found.setdefault(line[1:-1], [])
            continue
        key, sep, value = line.partition("=")
        assert sep and not line.endswith("\\"), f"not a key=value line: {line!r}"
        current.append((key, value))
    return found


def settings_of(unit: Path, section: str) -> dict[str, list[str]]:
    values: dict[str, list[str]] = {}
    for key, value in sections(unit)[section]:
        values.setdefault(key, []).append(value)
    return values


@pytest.fixture(scope="module")
def unit_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("unit")
    unit = root / f"{SERVICE}.service"
    # The directories are the site's (Puppet creates only the log file itself).
    (root / "log").mkdir()
    (root / "run").mkdir()
    tail = f"""
Service <| title == '{SERVICE}' |> {{
  provider => 'base', start => '/bin/true', stop => '/bin/true', status => '/bin/true',
}}
File <| title == '/etc/systemd/system/{SERVICE}.service' |> {{ path => '{unit}' }}
"""
    run = puppet_apply(
        root / "site",
        {
            "choria::broker::identity": "broker1.example.net",
            "choria::broker::adapters": {"node_data": NODE_DATA},
        },
        via="hiera",
        overrides={
            "choria::broker::manage_service": True,
            "choria::broker::service_user": USER,
            "choria::broker::service_group": GROUP,
            "choria::broker::executable": str(EXECUTABLE),
            "choria::broker::log_file": str(root / "log" / "adapters.log"),
            "choria::broker::pid_file": str(root / "run" / "adapters.pid"),
        },
        manifest_tail=tail,
    )
    assert run.returncode == 2, run.stdout + run.stderr
    return unit


def test_the_unit_runs_the_checkout_and_may_write_only_its_log_and_pid_files(unit_file: Path) -> None:
    text = unit_file.read_text()
    root = unit_file.parent
    assert (
        f"\nExecStart={EXECUTABLE} run --config {root}/site/broker.conf --pid {root}/run/adapters.pid\n"
        in text
    )
    assert [line for line in text.splitlines() if line.startswith("ReadWritePaths=")] == [
        f"ReadWritePaths={root}/log/adapters.log",
        f"ReadWritePaths={root}/run",
    ]
    assert "\nLimitNOFILE=1044\n" in text  # 1024 + 10 ingest + 10 stream connections
    # The runtime's own count of what the file Puppet wrote needs fits that limit.
    need = descriptor_need(load_settings(root / "site" / "broker.conf", environ={}))
    assert (need.connections, need.total <= 1044) == (20, True)


def test_the_service_section_runs_as_the_configured_user_and_restarts_on_failure_only(
    unit_file: Path,
) -> None:
    service = settings_of(unit_file, "Service")
    assert (service["User"], service["Group"]) == ([USER], [GROUP])
    assert USER != "root"
    assert (service["Restart"], service["RestartPreventExitStatus"]) == (["on-failure"], [str(EXIT_CONFIG)])
    # The runtime's exit status for a configuration error is the one systemd must not retry.
    assert EXIT_CONFIG == 78
    hardening = {
        "NoNewPrivileges": ["yes"],
        "ProtectSystem": ["strict"],
        "ProtectHome": ["yes"],
        "PrivateTmp": ["yes"],
        "ProtectKernelTunables": ["yes"],
        "ProtectControlGroups": ["yes"],
        "RestrictAddressFamilies": ["AF_INET AF_INET6 AF_UNIX"],
        "LockPersonality": ["yes"],
        "MemoryDenyWriteExecute": ["yes"],
        "LimitNOFILE": ["1044"],
    }
    assert {key: service.get(key) for key in hardening} == hardening
    # Nothing of the service's own settings outside [Service].
    outside = {key for name, lines in sections(unit_file).items() if name != "Service" for key, _ in lines}
    assert outside == {"Description", "Documentation", "Wants", "After", "WantedBy"}
    assert log_file_owner(unit_file) == (USER, GROUP)


def log_file_owner(unit_file: Path) -> tuple[str, str]:
    status = (unit_file.parent / "log" / "adapters.log").stat()
    return pwd.getpwuid(status.st_uid).pw_name, grp.getgrgid(status.st_gid).gr_name


def test_systemd_analyze_verify_accepts_the_unit(unit_file: Path) -> None:
    if not EXECUTABLE.exists():
        pytest.skip("no .venv console script (scripts/setup)")
    verify = subprocess.run(
        ["systemd-analyze", "verify", str(unit_file)], capture_output=True, text=True, timeout=60
    )
    # verify only warns about unknown or misspelt settings, so its output must be empty too.
    assert (verify.returncode, verify.stdout + verify.stderr) == (0, "")


def test_systemd_analyze_security_counts_every_hardening_setting(unit_file: Path) -> None:
    security = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", "--no-pager", str(unit_file)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    print(security.stdout)
    applied = {line.split()[1] for line in security.stdout.splitlines() if line.startswith("✓")}
    assert [name for name in HARDENED if name not in applied] == []
    # systemd reads the configured user: a static user that is not root.
    assert "User=/DynamicUser=" in applied
    assert f"Overall exposure level for {SERVICE}.service:" in security.stdout
