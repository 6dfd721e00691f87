"""`nodes`: the fleet as an adapter's stream knows it; `nodes export`: a go-choria inventory file."""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import yaml

from choria_broker_adapters.cli import load_settings_or_report
from choria_broker_adapters.cli.streams import SETUP_HINT, ConnectFailure, _connect, connection_options
from choria_broker_adapters.codec import jsonfast, nodelist
from choria_broker_adapters.codec.nodelist import Filters
from choria_broker_adapters.config.settings import AdapterSettings, Settings
from choria_broker_adapters.core.durations import parse_duration
from choria_broker_adapters.core.exits import EXIT_CONFIG, EXIT_FAILURE, EXIT_OK, EXIT_USAGE
from choria_broker_adapters.core.subjects import derive_subjects
from choria_broker_adapters.jetstream import inventory as stream_inventory
from choria_broker_adapters.jetstream.admin import JetStreamAdminError

NAME = "nodes"
HELP = "list the nodes in an adapter's stream (latest registration each), find stale ones, export inventory"
DESCRIPTION = """\
One row per node from an adapter's JetStream stream: the latest message on each node subject
(stream.topic with %s = identity), decoded as a Choria registration. Columns: identity, time
of the last registration, its age, the registration protocol (inventorycontent, filecontent,
... or unreadable with the reason), and the number of agents and classes. A summary line
follows: nodes, stale, newest and oldest registration.

Only the last message of each subject is read (JetStream direct get in batches; `streams
setup` enables allow_direct on the stream, without it every subject is fetched one by one).

--stale DURATION lists only nodes whose latest registration is older than DURATION and exits
1 when there are any, so a monitoring check or cron job can call it. --filter-class and
--filter-fact (repeatable, all must match, /regex/ allowed) keep only matching inventory nodes.

export --format inventory writes the discovery file of go-choria's `inventory` discovery
method from every node's latest inventory registration, for
`choria req ... --dm inventory --discovery-source FILE`. JSON unless --yaml or the --output
name ends in .yaml/.yml (go-choria reads YAML only from such names). --output replaces the
file atomically; --stale leaves stale nodes out.

examples:
  choria-broker-adapters nodes --config /etc/choria/broker.conf
  choria-broker-adapters nodes --config broker.conf --json | jq -r '.nodes[].identity'
  choria-broker-adapters nodes --config broker.conf --filter-class role::web --filter-fact os.family=RedHat
  choria-broker-adapters nodes --config broker.conf --stale 15m || echo "nodes went quiet"
  choria-broker-adapters nodes export --format inventory --config broker.conf --stale 1h \\
      --output /etc/choria/inventory.yaml

exit status: 0 listed (no stale node with --stale), 1 stale nodes found, stream missing or
             JetStream unreachable, 2 usage error, 78 configuration error
"""


def _duration(text: str) -> float:
    try:
        seconds = parse_duration(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration (e.g. 90s, 15m, 2h, 1d)") from None
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be longer than 0s")
    return seconds


def _fact_filter(text: str) -> tuple[str, str]:
    try:
        name, value = nodelist.parse_fact_filter(text)
        return name, nodelist.validate_pattern(value)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _class_filter(text: str) -> str:
    try:
        return nodelist.validate_pattern(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _connection_arguments(parser: argparse.ArgumentParser, *, nested: bool) -> None:
    # Defaults are only set on the outer parser: argparse lets a sub-parser's default overwrite a
    # value given before the sub-command word.
    default: Any = argparse.SUPPRESS if nested else None
    parser.add_argument("--config", "-c", metavar="FILE", default=default, help="the broker.conf to use")
    parser.add_argument(
        "--adapter",
        metavar="NAME",
        default=default,
        help="the adapter whose stream to read (needed when several adapters are configured)",
    )
    parser.add_argument(
        "--stale",
        metavar="DURATION",
        type=_duration,
        default=default,
        help="nodes whose latest registration is older than this are stale (e.g. 15m)",
    )
    parser.add_argument(
        "--disable-tls",
        action="store_true",
        default=argparse.SUPPRESS if nested else False,
        help="connect without TLS (as `run --disable-tls`)",
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    _connection_arguments(parser, nested=False)
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of the table")
    parser.add_argument(
        "--filter-class",
        metavar="CLASS",
        action="append",
        type=_class_filter,
        default=[],
        help="only nodes with this class (repeatable; /regex/ allowed)",
    )
    parser.add_argument(
        "--filter-fact",
        metavar="FACT=VALUE",
        action="append",
        type=_fact_filter,
        default=[],
        help="only nodes whose fact (dotted path, e.g. os.family) has this value (repeatable; /regex/)",
    )
    actions = parser.add_subparsers(dest="nodes_action", metavar="ACTION")
    export = actions.add_parser(
        "export",
        help="write a go-choria inventory discovery file",
        description="Write the go-choria inventory discovery file built from every node's latest "
        "inventory registration.",
    )
    export.add_argument("--format", required=True, choices=("inventory",), help="the file format")
    export.add_argument("--output", "-o", metavar="FILE", help="write here atomically instead of stdout")
    export.add_argument("--yaml", action="store_true", help="YAML instead of JSON")
    _connection_arguments(export, nested=True)


@dataclass(frozen=True)
class Source:
    """Where one adapter's node messages are: stream, subject filter, connection options."""

    adapter: AdapterSettings
    subject_filter: str
    subject_prefix: str
    options: dict[str, Any]


def choose_adapter(settings: Settings, name: str | None) -> AdapterSettings | str:
    """The adapter to read, or a sentence saying why none could be chosen."""
    adapters = settings.adapters
    if name is not None:
        if name in adapters:
            return adapters[name]
        return f"no adapter {name!r} in {settings.config_file}; configured: {', '.join(adapters) or 'none'}"
    if len(adapters) == 1:
        return next(iter(adapters.values()))
    registration = [adapter for adapter in adapters.values() if adapter.ingest_protocol == "request"]
    if len(registration) == 1:
        return registration[0]
    return (
        f"{settings.config_file} configures adapters {', '.join(adapters) or '(none)'}: "
        "choose one with --adapter NAME"
    )


def subject_filter_of(adapter: AdapterSettings) -> tuple[str, str]:
    """(stream subject filter, prefix before the identity) for the adapter's node subjects."""
    try:
        (subject,) = derive_subjects(adapter.stream_topic)
    except ValueError:
        return ">", ""
    if subject.endswith(".>"):
        return subject, subject[:-1]
    return subject, ""


def run(args: argparse.Namespace) -> int:
    if not args.config:
        print("nodes: --config FILE is required", file=sys.stderr)
        return EXIT_USAGE
    settings = load_settings_or_report(args.config)
    if settings is None:
        return EXIT_CONFIG
    chosen = choose_adapter(settings, args.adapter)
    if isinstance(chosen, str):
        print(chosen, file=sys.stderr)
        return EXIT_USAGE
    servers = tuple(chosen.stream_servers) or tuple(settings.middleware_hosts)
    if not servers:
        print(
            f"{settings.config_file}: adapter {chosen.name}: no stream.servers and no "
            "plugin.choria.middleware_hosts to connect to",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    try:
        options = connection_options(settings, servers, args.disable_tls)
    except ValueError as error:
        hint = " (for a server without TLS use --disable-tls)" if "TLS" in str(error) else ""
        print(f"{settings.config_file}: {error}{hint}", file=sys.stderr)
        return EXIT_CONFIG
    subject_filter, prefix = subject_filter_of(chosen)
    source = Source(chosen, subject_filter, prefix, options)
    exporting = getattr(args, "nodes_action", None) == "export"
    filters = Filters(tuple(getattr(args, "filter_class", ())), tuple(getattr(args, "filter_fact", ())))
    return asyncio.run(_run(source, args, filters, exporting, settings.config_file))


async def _run(
    source: Source, args: argparse.Namespace, filters: Filters, exporting: bool, config: str
) -> int:
    try:
        client = await _connect(source.options)
    except ConnectFailure as error:
        print(error, file=sys.stderr)
        return EXIT_FAILURE
    try:
        now = datetime.datetime.now(datetime.UTC)
        try:
            fleet = await stream_inventory.read_fleet(
                client,
                source.adapter.stream_name,
                source.subject_filter,
                subject_prefix=source.subject_prefix,
                keep_inventory=exporting or not filters.empty,
            )
            if fleet is not None and exporting:
                await stream_inventory.complete_inventories(client, fleet)
        except JetStreamAdminError as error:
            print(f"{source.adapter.stream_name}: {error.args[0]}", file=sys.stderr)
            return EXIT_FAILURE
        if fleet is None:
            print(
                f"adapter {source.adapter.name}: stream {source.adapter.stream_name} missing — "
                f"{SETUP_HINT.format(config=config)}",
                file=sys.stderr,
            )
            return EXIT_FAILURE
        if exporting:
            return export(fleet, now, args.stale, args.output, args.yaml, sys.stdout)
        return show(source.adapter.name, fleet, now, args.stale, filters, args.json, sys.stdout)
    finally:
        await client.close()


def show(
    adapter: str,
    fleet: stream_inventory.Fleet,
    now: datetime.datetime,
    stale_after: float | None,
    filters: Filters,
    as_json: bool,
    out: TextIO,
) -> int:
    rows = [row for row in fleet.rows if filters.matches(row.inventory)]
    summary = nodelist.summarise(rows, now, stale_after)
    shown = rows if stale_after is None else [row for row in rows if row.is_stale(now, stale_after)]
    if as_json:
        document = {
            "adapter": adapter,
            "stream": fleet.stream,
            "method": fleet.method,
            "nodes": [nodelist.row_document(row, now, stale_after) for row in shown],
            "summary": nodelist.summary_document(summary, stale_after),
        }
        out.write(json_text(document))
    else:
        if shown:
            out.write("\n".join(nodelist.table_lines(shown, now)) + "\n")
        out.write(nodelist.summary_line(summary, now, stale_after) + "\n")
    return EXIT_FAILURE if stale_after is not None and summary.stale else EXIT_OK


def export(
    fleet: stream_inventory.Fleet,
    now: datetime.datetime,
    stale_after: float | None,
    output: str | None,
    as_yaml: bool,
    out: TextIO,
) -> int:
    nodes = [
        (row.identity, row.inventory)
        for row in fleet.rows
        if row.inventory is not None and (stale_after is None or not row.is_stale(now, stale_after))
    ]
    document = nodelist.discovery_file(nodes)
    yaml_wanted = as_yaml or (output is not None and Path(output).suffix in (".yaml", ".yml"))
    text = (
        yaml.safe_dump(document, sort_keys=False, allow_unicode=True) if yaml_wanted else json_text(document)
    )
    if output is None:
        out.write(text)
        return EXIT_OK
    try:
        write_atomically(Path(output), text)
    except OSError as error:
        print(f"cannot write {output}: {error.strerror or error}", file=sys.stderr)
        return EXIT_FAILURE
    print(f"wrote {len(nodes)} nodes to {output}", file=sys.stderr)
    return EXIT_OK


def json_text(document: Any) -> str:
    """Indented JSON with a final newline; orjson when installed (the listing can be large)."""
    if jsonfast.orjson is not None:
        try:
            return jsonfast.orjson.dumps(document, option=jsonfast.orjson.OPT_INDENT_2).decode() + "\n"
        except TypeError:  # e.g. an integer fact beyond 64 bits; the standard library writes it
            pass
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def write_atomically(path: Path, text: str, mode: int = 0o644) -> None:
    """Replace `path` with `text` so readers see the old file or the new one, never a part."""
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent or ".")
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
