"""`streams setup` / `streams status`: provision and inspect the adapters' JetStream streams."""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TextIO

import nats
import nats.errors
from nats.aio.client import Client

from choria_broker_adapters.cli import load_settings_or_report
from choria_broker_adapters.config.settings import AdapterSettings, Settings
from choria_broker_adapters.core.exits import EXIT_CONFIG, EXIT_FAILURE, EXIT_OK
from choria_broker_adapters.core.servers import ServerList
from choria_broker_adapters.core.subjects import derive_subjects, uncaptured_subjects
from choria_broker_adapters.jetstream.admin import (
    JetStreamAdminError,
    SetupOutcome,
    StreamStatus,
    apply_stream,
    stream_status,
)
from choria_broker_adapters.jetstream.plan import StreamPlan, plan_streams

NAME = "streams"
HELP = "create/update (setup) or inspect (status) each adapter's JetStream stream"
DESCRIPTION = """\
Provision the JetStream streams the adapters publish into, from the same broker.conf.

setup   creates each adapter's stream (stream.name, default CHORIA_<ADAPTER>) on its
        stream.servers (or the middleware hosts), or updates it when the configuration changed,
        printing one line per stream. Subjects come from stream.subjects or are derived from
        stream.topic (a trailing %s becomes >, node identities contain dots).
        Changes JetStream cannot make in place (storage type, retention to/from workqueue, a
        mirror or sealed stream) are refused for that stream: nothing of it is changed and the
        exit status is 1. Running setup again changes nothing ("NAME: up to date").
        Adapters with the same stream.name share one stream: subjects are merged, all other
        stream.* settings must agree (else exit 78). Settings the configuration does not
        describe (description, max_bytes, compression, ...) are left as they are.
        On nats-server 2.14+ (JetStream API level 4) the stream gets allow_batched, so that
        adapters can publish in fast-ingest batches (stream.publish auto or batched); setup
        prints whether it did.
status  shows per adapter its stream's messages, bytes, first/last message time and the number
        of distinct subjects (one per node for a %s topic), or that the stream is missing.

examples:
  choria-broker-adapters streams setup --config /etc/choria/broker.conf --dry-run
  choria-broker-adapters streams setup --config /etc/choria/broker.conf
      created CHORIA_NODE_DATA: subjects choria.node_metadata.>, max_age 168h, storage file, ...
      updated CHORIA_NODE_DATA: max_age 168h → 336h
      CHORIA_NODE_DATA: up to date
  choria-broker-adapters streams status --config /etc/choria/broker.conf --json | jq .

exit status: 0 success, 1 refused/failed change, missing stream (status) or unreachable server,
             78 configuration error
"""

SETUP_HINT = "run `choria-broker-adapters streams setup --config {config}`"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="streams_action", metavar="ACTION", required=True)
    setup = actions.add_parser(
        "setup",
        help="create or update each adapter's stream",
        description="Create or update each adapter's JetStream stream to match broker.conf.",
    )
    setup.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    status = actions.add_parser(
        "status",
        help="show each adapter's stream contents",
        description="Show messages, bytes, first/last time and distinct subjects of each adapter's stream.",
    )
    status.add_argument("--json", action="store_true", help="print a machine-readable document instead")
    for action in (setup, status):
        action.add_argument("--config", "-c", required=True, metavar="FILE", help="the broker.conf to use")
        action.add_argument(
            "--disable-tls", action="store_true", help="connect without TLS (as `run --disable-tls`)"
        )


def run(args: argparse.Namespace) -> int:
    settings = load_settings_or_report(args.config)
    if settings is None:
        return EXIT_CONFIG
    if not settings.adapters:
        print(f"{settings.config_file}: no adapters configured (plugin.choria.adapters)", file=sys.stderr)
        return EXIT_OK
    groups, problems = group_by_servers(settings)
    options: dict[tuple[str, ...], dict[str, Any]] = {}
    for servers, _ in groups:
        try:
            options[servers] = connection_options(settings, servers, args.disable_tls)
        except ValueError as error:  # includes connect.ConnectConfigError
            hint = " (for a server without TLS use --disable-tls)" if "TLS" in str(error) else ""
            problems.append(f"{error}{hint}")
    if args.streams_action == "setup":
        plans = [(options.get(servers, {}), plan_streams(adapters)) for servers, adapters in groups]
        problems += [problem for _, plan in plans for problem in plan.problems]
        if problems:
            _print_problems(settings.config_file, problems)
            return EXIT_CONFIG
        return asyncio.run(_setup(plans, args.dry_run, sys.stdout))
    if problems:
        _print_problems(settings.config_file, problems)
        return EXIT_CONFIG
    connections = [(options[servers], adapters) for servers, adapters in groups]
    return asyncio.run(_status(settings, connections, args.json, sys.stdout))


def _print_problems(config_file: str, problems: Sequence[str]) -> None:
    count = len(problems)
    print(f"{config_file}: {count} stream configuration error{'s' if count != 1 else ''}:", file=sys.stderr)
    for problem in problems:
        print(f"  {problem}", file=sys.stderr)


ServerGroup = tuple[ServerList, list[AdapterSettings]]


def group_by_servers(settings: Settings) -> tuple[list[ServerGroup], list[str]]:
    """Adapters grouped by the JetStream servers they publish to."""
    groups: dict[ServerList, list[AdapterSettings]] = {}
    for adapter in settings.adapters.values():
        groups.setdefault(adapter.publish_servers, []).append(adapter)
    return list(groups.items()), []


def connection_options(settings: Settings, servers: ServerList, disable_tls: bool) -> dict[str, Any]:
    """nats-py options for a one-shot admin connection: TLS/credentials as `run`, no reconnecting."""
    # Imported here so that `--help` and the other commands never depend on the connection layer.
    from choria_broker_adapters.transport.connect import connect_options

    name = f"choria-broker-adapters streams {settings.identity}".strip()
    options = connect_options(settings, servers=servers, name=name, disable_tls=disable_tls, on_event=None)
    # A one-shot command should fail fast: two quick tries per server (nats-py's minimum; with 0
    # or -1 its first connect loops forever), then give up, and never reconnect afterwards.
    options.update(allow_reconnect=False, max_reconnect_attempts=1, reconnect_time_wait=0)
    return options


class ConnectFailure(Exception):
    """No server of a group accepted the connection; the message names the likely cause."""


async def _connect(options: dict[str, Any]) -> Client:
    from choria_broker_adapters.transport.connect import describe_connect_error, describe_servers

    failures: list[BaseException] = []

    async def remember(error: Exception) -> None:
        # nats-py reports each failed attempt here and raises only "no servers" at the end.
        failures.append(error)

    try:
        return await nats.connect(**{**options, "error_cb": remember})
    except (OSError, nats.errors.Error, TimeoutError) as error:
        cause = failures[-1] if failures else error
        raise ConnectFailure(
            f"cannot connect to {describe_servers(options)}: {describe_connect_error(cause)}"
        ) from None


def _servers_text(servers: Sequence[str]) -> str:
    return ", ".join(servers)


async def _setup(plans: Sequence[tuple[dict[str, Any], StreamPlan]], dry_run: bool, out: TextIO) -> int:
    status = EXIT_OK
    for options, plan in plans:
        if len(plans) > 1:
            print(f"JetStream at {', '.join(options['servers'])}:", file=out)
        try:
            client = await _connect(options)
        except ConnectFailure as error:
            print(error, file=sys.stderr)
            status = EXIT_FAILURE
            continue
        try:
            for stream in plan.streams:
                try:
                    outcome: SetupOutcome = await apply_stream(client, stream, dry_run=dry_run)
                except JetStreamAdminError as error:
                    print(f"{stream.name}: {error.args[0]}", file=sys.stderr)
                    status = EXIT_FAILURE
                    continue
                print(outcome.describe(dry_run), file=out if outcome.ok else sys.stderr)
                if outcome.ok and outcome.note:
                    print(f"  {outcome.note}", file=out)
                if not outcome.ok:
                    status = EXIT_FAILURE
        finally:
            await client.close()
    return status


@dataclass(frozen=True)
class AdapterStreamReport:
    adapter: str
    stream: str
    servers: tuple[str, ...]
    status: StreamStatus | None = None
    uncaptured: tuple[str, ...] = ()
    error: str | None = None

    def document(self) -> dict[str, Any]:
        found = self.status
        return {
            "adapter": self.adapter,
            "stream": self.stream,
            "servers": list(self.servers),
            "exists": found is not None,
            "error": self.error,
            "subjects": list(found.subjects) if found else [],
            "messages": found.messages if found else 0,
            "bytes": found.bytes if found else 0,
            "first_time": _iso(found.first_time) if found else None,
            "last_time": _iso(found.last_time) if found else None,
            "distinct_subjects": found.distinct_subjects if found else 0,
            "uncaptured_subjects": list(self.uncaptured),
        }


def _iso(moment: datetime.datetime | None) -> str | None:
    return None if moment is None else moment.isoformat().replace("+00:00", "Z")


def _wanted_subjects(adapter: AdapterSettings) -> tuple[str, ...]:
    try:
        return derive_subjects(adapter.stream_topic)
    except ValueError:
        return tuple(adapter.stream_subjects)


async def _status(
    settings: Settings,
    connections: Sequence[tuple[dict[str, Any], list[AdapterSettings]]],
    as_json: bool,
    out: TextIO,
) -> int:
    reports: list[AdapterStreamReport] = []
    for options, adapters in connections:
        servers = tuple(options["servers"])
        try:
            client = await _connect(options)
        except ConnectFailure as error:
            reports += [
                AdapterStreamReport(a.name, a.stream_name, servers, error=str(error)) for a in adapters
            ]
            continue
        try:
            for adapter in adapters:
                try:
                    found = await stream_status(client, adapter.stream_name)
                except JetStreamAdminError as error:
                    reports.append(
                        AdapterStreamReport(adapter.name, adapter.stream_name, servers, error=error.args[0])
                    )
                    continue
                missed = uncaptured_subjects(_wanted_subjects(adapter), found.subjects) if found else ()
                reports.append(AdapterStreamReport(adapter.name, adapter.stream_name, servers, found, missed))
        finally:
            await client.close()
    # Settings order, not server-group order: operators read adapters as they configured them.
    order = list(settings.adapters)
    reports.sort(key=lambda report: order.index(report.adapter))
    if as_json:
        print(json.dumps({"adapters": [report.document() for report in reports]}, indent=2), file=out)
    else:
        for report in reports:
            print(_status_text(report, settings.config_file), file=out)
    healthy = all(report.status is not None and not report.uncaptured for report in reports)
    return EXIT_OK if healthy else EXIT_FAILURE


def _status_text(report: AdapterStreamReport, config_file: str) -> str:
    head = f"{report.adapter}: stream {report.stream}"
    hint = SETUP_HINT.format(config=config_file)
    if report.error is not None:
        return f"{head}: {report.error}"
    found = report.status
    if found is None:
        return f"{head} missing — {hint}"
    lines = [
        f"{head} ({', '.join(found.subjects)}) on {_servers_text(report.servers)}",
        f"  messages {found.messages}, bytes {found.bytes} ({_size(found.bytes)}), "
        f"distinct subjects {found.distinct_subjects}",
        f"  first {_when(found.first_time)}, last {_when(found.last_time)}",
    ]
    if report.uncaptured:
        lines.append(
            f"  warning: the stream does not capture {', '.join(report.uncaptured)}, where this adapter "
            f"publishes — {hint}"
        )
    return "\n".join(lines)


def _when(moment: datetime.datetime | None) -> str:
    return "-" if moment is None else moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _size(count: int) -> str:
    size = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"  # pragma: no cover - unreachable, keeps type checkers content
