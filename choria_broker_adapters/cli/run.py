"""`run`: run every adapter named in plugin.choria.adapters until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import logging
import sys

from choria_broker_adapters.cli import load_settings_or_report
from choria_broker_adapters.config.settings import ConfigError, Settings
from choria_broker_adapters.config.trust import tls_problems, verify_problems
from choria_broker_adapters.core.exits import EXIT_CONFIG, EXIT_FAILURE, EXIT_OK
from choria_broker_adapters.process import logs
from choria_broker_adapters.process.lifecycle import event_loop_runner
from choria_broker_adapters.process.multiprocess import parse_child, parse_processes

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

One process uses one CPU core (about 30,000 messages a second). --processes N runs N processes
that all run every adapter in the same queue groups, so the NATS server spreads the messages
over them. This process is process 0: it serves the statistics (summed over all processes,
/choria/ also lists each process), forwards SIGTERM/SIGINT to the others, restarts one that
dies, and exits 0 only when every process stopped cleanly. The others stop if it dies. Log
lines carry process=<index> when N > 1.

examples:
  choria-broker-adapters run --config /etc/choria/broker.conf
  choria-broker-adapters run --config broker.conf --disable-tls --pid /run/choria-broker-adapters.pid
  choria-broker-adapters run --config /etc/choria/broker.conf --processes auto

exit status: 0 clean stop, 1 a process did not stop cleanly, 78 configuration error
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
    parser.add_argument(
        "--processes",
        type=_processes,
        default=1,
        metavar="N",
        help="run N processes to use N cores (default 1; 'auto' or 0: one per core)",
    )
    # Internal: how the parent starts process INDEX, which reports to it on pipe FD.
    parser.add_argument("--child", type=_child, metavar="INDEX:FD", help=argparse.SUPPRESS)


def _processes(value: str) -> int:
    try:
        return parse_processes(value)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _child(value: str) -> tuple[int, int]:
    try:
        return parse_child(value)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def run(args: argparse.Namespace) -> int:
    settings = load_settings_or_report(args.config)
    if settings is None:
        return EXIT_CONFIG
    trust_problems = verify_problems(settings)
    if trust_problems:
        print(str(ConfigError(settings.config_file, trust_problems)), file=sys.stderr)
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
    descriptors = _descriptor_problem(settings)
    if descriptors:
        print(f"{settings.config_file}: {descriptors}", file=sys.stderr)
        return EXIT_CONFIG
    child_index = args.child[0] if args.child else None
    multiprocess = child_index is None and args.processes > 1
    logs.configure(
        settings.logfile,
        settings.loglevel,
        debug=args.debug,
        process_index=child_index if child_index is not None else (0 if multiprocess else None),
    )
    log = logging.getLogger("choria_broker_adapters.process.runtime")
    if child_index is None:  # not again in every child
        for warning in settings.warnings:
            log.warning("Configuration: %s", warning)

    from choria_broker_adapters.process.lifecycle import stop_signals
    from choria_broker_adapters.process.multiprocess import ChildSupervisor, SnapshotReporter
    from choria_broker_adapters.process.runtime import (
        Runtime,
        StartupError,
        remove_pid_file,
        write_pid_file,
    )
    from choria_broker_adapters.process.stats import Metrics

    if args.child:
        runtime = Runtime(settings, disable_tls=args.disable_tls, reporter=SnapshotReporter(*args.child))
        try:
            return EXIT_OK if event_loop_runner()(runtime.run()) else EXIT_FAILURE
        finally:
            stop_signals.ignore()

    async def run_runtime() -> bool:
        # Built inside the event loop: the supervisor and runtime use it.
        children = None
        if multiprocess:
            grace = max((a.shutdown_grace for a in settings.adapters.values()), default=10.0)
            children = ChildSupervisor(
                args.processes, _child_arguments(args), Metrics(settings.identity), grace + 10.0
            )
        runtime = Runtime(
            settings,
            disable_tls=args.disable_tls,
            children=children,
            metrics=children.metrics if children else None,
        )
        return await runtime.run()

    if stop_signals.received:
        log.info("Stopping before start: received %s", stop_signals.received)
        return EXIT_OK
    try:
        if args.pid:
            write_pid_file(args.pid)
        try:
            clean = event_loop_runner()(run_runtime())
        finally:
            stop_signals.ignore()  # stopped: what remains is exiting
            if args.pid:
                remove_pid_file(args.pid)
    except StartupError as error:
        log.error("Cannot start: %s", error)
        print(f"{settings.config_file}: cannot start: {error}", file=sys.stderr)
        return EXIT_CONFIG
    return EXIT_OK if clean else EXIT_FAILURE


def _descriptor_problem(settings: Settings) -> str | None:
    """Refuse a configuration the open-files limit cannot hold; raise the soft limit if that helps."""
    from choria_broker_adapters.process.limits import (
        current_limit,
        descriptor_need,
        limit_verdict,
        raise_soft_limit,
    )

    soft, hard = current_limit()
    verdict = limit_verdict(descriptor_need(settings), soft, hard)
    if verdict.fits:
        return None
    if verdict.can_raise:
        try:
            raise_soft_limit()
        except (ValueError, OSError) as error:
            return f"the configuration {verdict.message}, but raising it failed: {error}"
        return None
    return f"the configuration {verdict.message}"


def _child_arguments(args: argparse.Namespace) -> list[str]:
    """What a child process is started with: the same configuration and flags, one process."""
    arguments = ["--config", args.config]
    if args.disable_tls:
        arguments.append("--disable-tls")
    if args.debug:
        arguments.append("--debug")
    return arguments


def _connection_problem(settings: Settings, *, disable_tls: bool) -> str | None:
    """Build every connection's options once, so unusable TLS or credentials stop us before connecting."""
    from choria_broker_adapters.transport.connect import ConnectConfigError, connect_options

    server_lists = [settings.middleware_hosts, *(a.publish_servers for a in settings.adapters.values())]
    try:
        for servers in server_lists:
            connect_options(settings, servers=servers, name="check", disable_tls=disable_tls, on_event=None)
    except ConnectConfigError as error:
        return str(error)
    return None
