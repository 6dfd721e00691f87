"""Real `puppet apply` of choria::broker installing the runtime from a wheel built here.

One life cycle, each step a `puppet apply --detailed-exitcodes` in the same isolated dirs
(see test_puppet_render.py): install into a temporary virtualenv, write the file and start the
service, in that order; apply again and nothing changes; change one adapter key and only the
file changes, restarting the service; install a newer wheel and only the virtualenv changes,
restarting the service; `ensure => absent` removes the unit, the file and the virtualenv. The
unit Puppet wrote passes `systemd-analyze verify` with the installed executable in place. Each
step is checked twice: in puppet's output and in the report it keeps of the run
(`last_run_report.yaml`: which resources changed, the service's `refresh` event, the count of
restarted resources).

No systemd runs here, so the site manifest gives the module's service resource Puppet's `base`
provider, whose start, stop, status and restart commands record each call in a file, and puts
the unit file into the run's directory. The module code under test is unchanged by that.

Dependencies come from the package index through a pip cache kept in the system temporary
directory between runs, so a rerun downloads nothing.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.test_puppet_render import REPO, PuppetRun, puppet_apply

pytestmark = [
    pytest.mark.puppet,
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("puppet") is None, reason="puppet is not installed (scripts/setup)"),
    pytest.mark.timeout(400),
]

SERVICE = "choria-broker-adapters"
UNIT_TITLE = f"/etc/systemd/system/{SERVICE}.service"
SYSTEM_PYTHON = Path("/usr/bin/python3")
PIP_CACHE = Path(tempfile.gettempdir()) / "choria-broker-adapters-test-pip-cache"
NODE_DATA = {
    "type": "choria_streams",
    "ingest": {"topic": "choria.broadcast.agent.registration", "protocol": "request", "workers": 10},
    "stream": {"topic": "choria.node_metadata.%s"},
}


def build_wheel(out: Path, version: str, work: Path) -> Path:
    """A wheel of this checkout at `version`, built from a copy (the checkout stays clean)."""
    source = work / f"src-{version}"
    shutil.copytree(REPO / "choria_broker_adapters", source / "choria_broker_adapters",
                    ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    shutil.copy(REPO / "README.md", source / "README.md")
    pyproject = (REPO / "pyproject.toml").read_text()
    assert 'version = "0.1.0"' in pyproject
    (source / "pyproject.toml").write_text(
        pyproject.replace('version = "0.1.0"', f'version = "{version}"', 1)
    )
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(out), str(source)],
        check=True,
        capture_output=True,
        env={"PATH": "/usr/bin:/bin", "HOME": str(work), "PIP_CACHE_DIR": str(PIP_CACHE)},
        timeout=240,
    )
    (wheel,) = out.glob(f"choria_broker_adapters-{version}-*.whl")
    return wheel


@dataclass
class Site:
    workdir: Path
    install_dir: Path
    unit_file: Path
    calls: Path  # one line per start/stop/restart of the stand-in service
    wheels: dict[str, Path]

    def apply(
        self, adapters: dict[str, Any], *, version: str = "0.1.0", ensure: str = "present"
    ) -> PuppetRun:
        tail = f"""
Service <| title == '{SERVICE}' |> {{
  provider => 'base',
  start    => "/bin/sh -c 'echo start >> {self.calls} && touch {self.workdir}/running'",
  stop     => "/bin/sh -c 'echo stop >> {self.calls} && rm -f {self.workdir}/running'",
  restart  => "/bin/sh -c 'echo restart >> {self.calls}'",
  status   => "/usr/bin/test -f {self.workdir}/running",
}}
File <| title == '{UNIT_TITLE}' |> {{ path => '{self.unit_file}' }}
"""
        overrides = {
            "choria::broker::ensure": ensure,
            "choria::broker::manage_package": True,
            "choria::broker::manage_service": True,
            "choria::broker::install_dir": str(self.install_dir),
            "choria::broker::package_source": str(self.wheels[version]),
            "choria::broker::python": str(SYSTEM_PYTHON),
            "choria::broker::python_packages": [],
        }
        return puppet_apply(
            self.workdir,
            {"choria::broker::identity": "broker1.example.net", "choria::broker::adapters": adapters},
            via="hiera",
            overrides=overrides,
            manifest_tail=tail,
            environment={"PIP_CACHE_DIR": str(PIP_CACHE), "PIP_NO_INPUT": "1"},
        )

    def call_log(self) -> list[str]:
        return self.calls.read_text().split() if self.calls.exists() else []

    def installed_version(self) -> str:
        script = "import importlib.metadata as m; print(m.version('choria-broker-adapters'))"
        # -I: the working directory (this checkout, with its egg-info) is not on the path.
        python = self.install_dir / "bin" / "python"
        run = subprocess.run([python, "-I", "-c", script], capture_output=True, text=True, check=True)
        return run.stdout.strip()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    if not SYSTEM_PYTHON.exists():
        pytest.skip("no /usr/bin/python3")
    root = tmp_path_factory.mktemp("install")
    with ThreadPoolExecutor(max_workers=2) as pool:
        builds = {
            version: pool.submit(build_wheel, root / version, version, root) for version in ("0.1.0", "0.1.1")
        }
        wheels = {version: build.result() for version, build in builds.items()}
    workdir = root / "site"
    yield Site(workdir, root / "opt" / SERVICE, root / "unit" / f"{SERVICE}.service", root / "calls", wheels)


def output(run: PuppetRun) -> str:
    return run.stdout + run.stderr


class _ReportLoader(yaml.SafeLoader):
    """Reads puppet's report, whose objects carry Ruby type tags, as plain mappings."""


_ReportLoader.add_multi_constructor(
    "!ruby/", lambda loader, suffix, node: loader.construct_mapping(node, deep=True)
)


@dataclass(frozen=True)
class Report:
    """What puppet's own report of the last run says changed."""

    data: dict[str, Any]

    @classmethod
    def last(cls, site: Site) -> Report:
        text = (site.workdir / "var" / "state" / "last_run_report.yaml").read_text()
        return cls(yaml.load(text, Loader=_ReportLoader))

    @property
    def status(self) -> str:
        return str(self.data["status"])

    def changed(self) -> set[str]:
        return {name for name, status in self.data["resource_statuses"].items() if status["changed"]}

    def events(self, resource: str) -> list[tuple[str, str]]:
        status = self.data["resource_statuses"][resource]
        return [(str(event["name"]), str(event["status"])) for event in status["events"]]

    def restarted(self) -> int:
        values = self.data["metrics"]["resources"]["values"]
        return next(int(count) for name, _label, count in values if name == "restarted")


_NOTICE = re.compile(r"^Notice: /Stage\[main\]/[^/]+/([A-Z][a-z]*\[.*?\])[/:]", re.MULTILINE)


def notices(run: PuppetRun) -> list[str]:
    """The resource of each `Notice: /Stage[main]/Class/Type[title]...` line, in order, once."""
    return list(dict.fromkeys(_NOTICE.findall(run.stdout)))


def test_life_cycle(site: Site) -> None:
    site.unit_file.parent.mkdir(parents=True)
    service = f"Service[{SERVICE}]"
    unit = f"File[{UNIT_TITLE}]"
    package = "Exec[choria-broker-adapters package]"
    virtualenv = "Exec[choria-broker-adapters virtualenv]"

    # 1. Install, write the file and the unit, start the service: in that order.
    first = site.apply({"node_data": NODE_DATA})
    assert first.returncode == 2, output(first)
    config = f"File[{first.config_file}]"
    assert f"{package}/returns: executed successfully" in first.stdout, first.stdout
    assert notices(first) == [virtualenv, package, config, unit, service], first.stdout
    assert f"{service}/ensure: ensure changed 'stopped' to 'running'" in first.stdout
    assert site.installed_version() == "0.1.0"
    console_script = site.install_dir / "bin" / "choria-broker-adapters"
    assert f"ExecStart={console_script} run --config {first.config_file}\n" in site.unit_file.read_text()
    help_run = subprocess.run([console_script, "run", "--help"], capture_output=True, text=True, timeout=60)
    assert help_run.returncode == 0 and "--config" in help_run.stdout
    assert site.call_log() == ["start"]
    if shutil.which("systemd-analyze"):
        verify = subprocess.run(
            ["systemd-analyze", "verify", str(site.unit_file)], capture_output=True, text=True
        )
        assert (verify.returncode, verify.stdout + verify.stderr) == (0, "")

    # 2. The same catalog again: nothing to do (exit 0), no command run, nothing restarted.
    second = site.apply({"node_data": NODE_DATA})
    assert second.returncode == 0, output(second)
    assert "Exec[" not in second.stdout, second.stdout
    assert notices(second) == [], second.stdout
    report = Report.last(site)
    assert (report.status, report.changed(), report.restarted()) == ("unchanged", set(), 0)
    assert site.call_log() == ["start"]

    # 3. One adapter key changes: the file changes and notifies the service, which restarts;
    # the unit stays as it was (so the file's notification alone restarts the service) and
    # nothing is installed. (A workers change would also change LimitNOFILE in the unit.)
    before = first.config_file.read_text()
    unit_before = site.unit_file.read_bytes()
    changed = {**NODE_DATA, "stream": {"topic": "choria.node_data.%s"}}
    third = site.apply({"node_data": changed})
    assert third.returncode == 2, output(third)
    old_line, new_line = "stream.topic = choria.node_metadata.%s\n", "stream.topic = choria.node_data.%s\n"
    assert old_line in before
    assert third.config_file.read_text() == before.replace(old_line, new_line)
    assert site.unit_file.read_bytes() == unit_before
    assert f"{config}/content: content changed" in third.stdout
    assert notices(third) == [config, service], third.stdout
    # Notified along two paths (the file, and its class to the service's class): one restart.
    assert f"{service}: Triggered 'refresh' from" in third.stdout, third.stdout
    assert site.call_log() == ["start", "restart"]
    report = Report.last(site)
    assert (report.status, report.changed(), report.restarted()) == ("changed", {config, service}, 1)
    assert report.events(service) == [("refresh", "success")]

    # 4. A newer release: installed over the old one, and the service restarts; the file and
    # the unit stay as they were, so the new release alone restarts the service.
    fourth = site.apply({"node_data": changed}, version="0.1.1")
    assert fourth.returncode == 2, output(fourth)
    assert f"{package}/returns: executed successfully" in fourth.stdout, fourth.stdout
    assert notices(fourth) == [package, service], fourth.stdout
    assert f"{service}: Triggered 'refresh' from" in fourth.stdout, fourth.stdout
    assert site.installed_version() == "0.1.1"
    assert site.call_log() == ["start", "restart", "restart"]
    report = Report.last(site)
    assert (report.status, report.changed(), report.restarted()) == ("changed", {package, service}, 1)
    assert report.events(service) == [("refresh", "success")]

    # 5. Absent: the service stops first, then the file, the unit and the virtualenv go.
    fifth = site.apply({"node_data": changed}, version="0.1.1", ensure="absent")
    assert fifth.returncode == 2, output(fifth)
    assert site.call_log() == ["start", "restart", "restart", "stop"]
    assert notices(fifth)[0] == service, fifth.stdout
    assert not fifth.config_file.exists()
    assert not site.unit_file.exists()
    assert not site.install_dir.exists()
    sixth = site.apply({"node_data": changed}, version="0.1.1", ensure="absent")
    assert sixth.returncode == 0, output(sixth)
