"""`run`: run every adapter named in plugin.choria.adapters until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from choria_broker_adapters import logs
from choria_broker_adapters.cli import EXIT_CONFIG, EXIT_OK, load_settings_or_report
from choria_broker_adapters.settings import Settings, tls_problems

NAME = "run"
HELP = "run every configured adapter (the main job)"
DESCRIPTION = """\
Read the broker.conf, validate it (exit 78 on any error, before connecting anywhere), then run
every adapter named in plugin.choria.adapters in this process: ingest workers queue-subscribe
to each adapter's ingest.topic on the Choria network, decode the Choria protocol and queue the
messages; stream workers publish them to JetStream on stream.topic (%s = sender identity),
waiting for every acknowledgement and retrying without duplicates.

SIGTERM or SIGINT stops ingesting, publishes and confirms what is queued within each adapter's
shutdown_grace, and exits 0.

examples:
  choria-broker-adapters run --config /etc/choria/broker.conf
  choria-broker-adapters run --config broker.conf --disable-tls --pid /run/choria-broker-adapters.pid

exit status: 0 clean stop, 78 configuration error
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", "-c", required=True, metavar="FILE", help="the broker.conf to run")
    parser.add_argument(
        "--disable-tls",
        action="store_true",
        help="connect without TLS (the Go broker's flag of the same name)",
    )
    parser.add_argument("--pid", metavar="FILE", help="write the process id to FILE while running")
    parser.add_argument("--debug", action="store_true", help="log at debug level whatever loglevel says")


def run(args: argparse.Namespace) -> int:
    settings = load_settings_or_report(args.config)
    if settings is None:
        return EXIT_CONFIG
    problems = [] if args.disable_tls else tls_problems(settings)
    if problems:
        print(f"{settings.config_file}: TLS is enabled but its files are missing:", file=sys.stderr)
        for problem in problems:
            print(f"  {problem}", file=sys.stderr)
        print("  (fix the paths, or run with --disable-tls for plain connections)", file=sys.stderr)
        return EXIT_CONFIG
    connection_problem = _connection_problem(settings, disable_tls=args.disable_tls)
    if connection_problem:
        print(f"{settings.config_file}: {connection_problem}", file=sys.stderr)
        return EXIT_CONFIG
    logs.configure(settings.logfile, settings.loglevel, debug=args.debug)
    log = logging.getLogger("choria_broker_adapters.runtime")
    for warning in settings.warnings:
        log.warning("Configuration: %s", warning)

    from choria_broker_adapters.runtime import Runtime, remove_pid_file, write_pid_file

    if args.pid:
        write_pid_file(args.pid)
    try:
        _event_loop_runner()(Runtime(settings, disable_tls=args.disable_tls).run())
    finally:
        if args.pid:
            remove_pid_file(args.pid)
    return EXIT_OK


def _connection_problem(settings: Settings, *, disable_tls: bool) -> str | None:
    """Build every connection's options once, so unusable TLS or credentials stop us before connecting."""
    from choria_broker_adapters.connect import ConnectConfigError, connect_options

    server_sets = {settings.middleware_hosts} | {
        a.stream_servers for a in settings.adapters.values() if a.stream_servers
    }
    try:
        for servers in server_sets:
            connect_options(
                settings, servers=list(servers), name="check", disable_tls=disable_tls, on_event=None
            )
    except ConnectConfigError as error:
        return str(error)
    return None


def _event_loop_runner():  # type: ignore[no-untyped-def]
    """uvloop when installed (the `fast` extra), else the stdlib loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run
    return uvloop.run
