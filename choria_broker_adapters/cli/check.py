"""`check`: validate a broker.conf and show every effective setting with where it came from."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from choria_broker_adapters.config.brokerconf import Problem
from choria_broker_adapters.config.keys import is_duration_key
from choria_broker_adapters.config.settings import ConfigError, Settings, load_settings
from choria_broker_adapters.config.trust import tls_problems, verify_problems
from choria_broker_adapters.core.durations import format_duration
from choria_broker_adapters.core.exits import EXIT_CONFIG, EXIT_OK

NAME = "check"
HELP = "validate a broker.conf and show the effective settings with their provenance"
DESCRIPTION = """\
Validate a broker.conf (and plugin.d/*.cfg beside it) the way `run` will, without connecting
anywhere. Prints every adapter's effective settings with the file:line each value came from
(or "default"), then all warnings. Every error is listed, each naming file, line and key.

examples:
  choria-broker-adapters check --config /etc/choria/broker.conf
  choria-broker-adapters check --config broker.conf --json | jq .adapters

exit status: 0 valid (warnings allowed), 78 invalid
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", "-c", required=True, metavar="FILE", help="the broker.conf to check")
    parser.add_argument("--json", action="store_true", help="print a machine-readable document instead")
    parser.add_argument(
        "--disable-tls", action="store_true", help="do not report missing TLS files (as `run --disable-tls`)"
    )


def run(args: argparse.Namespace) -> int:
    try:
        settings = load_settings(args.config)
        # Verification without readable trust material would refuse every message: an error.
        trust_problems = verify_problems(settings)
        if trust_problems:
            raise ConfigError(settings.config_file, trust_problems, list(settings.warnings))
    except ConfigError as error:
        if args.json:
            print(json.dumps(_error_document(error), indent=2))
        else:
            print(str(error), file=sys.stderr)
            for warning in error.warnings:
                print(f"  warning: {warning}", file=sys.stderr)
        return EXIT_CONFIG
    notes = [] if args.disable_tls else tls_problems(settings)
    notes += _descriptor_notes(settings)
    if args.json:
        print(json.dumps(_document(settings, notes), indent=2))
    else:
        _print_text(settings, notes)
    return EXIT_OK


def _descriptor_notes(settings: Settings) -> list[Problem]:
    """The open-files limit of this shell against the connections the adapters need.

    A warning, not an error: a service runs under its unit's LimitNOFILE, not this shell's.
    `run` raises the soft limit up to the hard one, and refuses to start beyond that."""
    from choria_broker_adapters.process.limits import current_limit, descriptor_need, limit_verdict

    verdict = limit_verdict(descriptor_need(settings), *current_limit())
    if verdict.fits:
        return []
    prefix = (
        "here the configuration "
        if verdict.can_raise
        else "run would refuse to start here: the configuration "
    )
    return [Problem(prefix + verdict.message, key="plugin.choria.adapters")]


def _json_value(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _document(settings: Settings, notes: list[Problem]) -> dict[str, Any]:
    return {
        "config_file": settings.config_file,
        "valid": True,
        "errors": [],
        "warnings": [w.as_dict() for w in (*settings.warnings, *notes)],
        "broker": {key: {"value": _json_value(v), "source": s} for key, v, s in settings.describe()},
        "adapters": {
            name: {key: {"value": _json_value(v), "source": s} for key, v, s in adapter.describe()}
            for name, adapter in settings.adapters.items()
        },
    }


def _error_document(error: ConfigError) -> dict[str, Any]:
    return {
        "config_file": error.config_file,
        "valid": False,
        "errors": [issue.as_dict() for issue in error.issues],
        "warnings": [w.as_dict() for w in error.warnings],
    }


def _format_value(key: str, value: Any) -> str:
    if is_duration_key(key) and isinstance(value, int | float):
        return format_duration(value)
    if isinstance(value, tuple):
        return ", ".join(value) if value else "(none)"
    if value is None:
        return "(none)"
    return str(value)


def _print_rows(rows: list[tuple[str, Any, str]], indent: str) -> None:
    width = max(len(key) for key, _, _ in rows)
    for key, value, source in rows:
        print(f"{indent}{key:<{width}} = {_format_value(key, value):<30}  # {source}")


def _print_text(settings: Settings, notes: list[Problem]) -> None:
    count = len(settings.adapters)
    print(f"{settings.config_file}: valid, {count} adapter{'s' if count != 1 else ''}")
    print()
    print("broker:")
    _print_rows(settings.describe(), "  ")
    for name, adapter in settings.adapters.items():
        print()
        print(f"adapter {name} ({adapter.type}):")
        _print_rows(adapter.describe(), "  ")
    warnings = [*settings.warnings, *notes]
    if warnings:
        print()
        print(f"{len(warnings)} warning{'s' if len(warnings) != 1 else ''}:")
        for warning in warnings:
            print(f"  {warning}")
