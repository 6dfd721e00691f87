"""Collecting problems while settings are built: `ConfigError` and the builder that gathers
every error and warning (each with file, line and key) and every value's provenance."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import voluptuous as vol

from choria_broker_adapters.config.brokerconf import Problem, RawConfig, RawOption, Source
from choria_broker_adapters.config.keys import MIDDLEWARE_KEYS, PROCESS_KEYS
from choria_broker_adapters.config.validators import validate_each

DEFAULT = "default"
_PROCESS_SCHEMA = {key.key: key.validate for key in PROCESS_KEYS} | MIDDLEWARE_KEYS


class ConfigError(Exception):
    """The configuration is invalid; `issues` lists every problem, each with file, line and key."""

    def __init__(
        self, config_file: str, issues: list[Problem], warnings: list[Problem] | None = None
    ) -> None:
        self.config_file = config_file
        self.issues = issues
        self.warnings = warnings or []
        count = len(issues)
        lines = [f"{config_file}: {count} configuration error{'s' if count != 1 else ''}:"]
        lines += [f"  {issue}" for issue in issues]
        super().__init__("\n".join(lines))


class Builder:
    """Collects errors, warnings and provenance while reading one RawConfig."""

    def __init__(self, raw: RawConfig, config_file: str, environ: Mapping[str, str]) -> None:
        self.raw = raw
        self.config_file = config_file
        self.environ = environ
        self.errors: list[Problem] = []
        self.warnings: list[Problem] = list(raw.warnings)
        self.sources: dict[str, str] = {}

    def file_source(self) -> Source:
        return Source(self.config_file, 0)

    def error(self, message: str, key: str, option: RawOption | None = None) -> None:
        self.errors.append(Problem(message, option.source if option else self.file_source(), key))

    def warn(self, message: str, key: str | None, option: RawOption | None = None) -> None:
        self.warnings.append(Problem(message, option.source if option else self.file_source(), key))

    def invalid(self, errors: list[vol.Invalid], options: Mapping[str, RawOption], prefix: str = "") -> None:
        for error in errors:
            name = str(error.path[0]) if error.path else ""
            self.error(error.msg, f"{prefix}{name}", options.get(name))

    def process_values(self) -> dict[str, Any]:
        """Every process key validated by one schema; environment overrides applied (as the Go
        broker does, a variable wins only when its key is in a file)."""
        texts: dict[str, Any] = {}
        for name in _PROCESS_SCHEMA:
            option = self.raw.get(name)
            if option is None:
                self.sources[name] = DEFAULT
                continue
            key = next((k for k in PROCESS_KEYS if k.key == name), None)
            if key is not None and key.env and self.environ.get(key.env):
                texts[name] = self.environ[key.env]
                self.sources[name] = f"environment {key.env} (key at {option.source})"
            else:
                texts[name] = option.value
                self.sources[name] = str(option.source)
        values, errors = validate_each(_PROCESS_SCHEMA, texts)
        self.invalid(errors, self.raw.options)
        return values
