"""The `choria-broker-adapters` command line.

Each sub-command is one module in this package exposing:

    NAME: str                      the sub-command word
    HELP: str                      one line for the command list
    DESCRIPTION: str               the longer text shown by `<command> --help`
    def add_arguments(parser): ... argparse arguments of the command
    def run(args) -> int: ...      the exit status

A new command is one module plus one entry in `COMMANDS`, which is also the order of `--help`.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import TYPE_CHECKING

from choria_broker_adapters import __version__

# Re-exported for the command modules; the codes themselves live in core.exits.
from choria_broker_adapters.core.exits import EXIT_CONFIG as EXIT_CONFIG
from choria_broker_adapters.core.exits import EXIT_FAILURE as EXIT_FAILURE
from choria_broker_adapters.core.exits import EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE

if TYPE_CHECKING:
    from choria_broker_adapters.config.settings import Settings


# Every command module, in the order `--help` lists them.
COMMANDS = ("run", "check", "decode", "render", "streams", "nodes", "demo")

EPILOG = """\
typical use:
  choria-broker-adapters demo                                  see the whole flow on a local nats-server
  choria-broker-adapters check --config /etc/choria/broker.conf   validate a configuration
  choria-broker-adapters run --config /etc/choria/broker.conf     run every configured adapter

exit status: 0 success, 1 failure, 2 usage error, 78 configuration error
"""


def load_settings_or_report(config: str) -> Settings | None:
    """The validated settings, or None after printing every configuration error to stderr."""
    from choria_broker_adapters.config.settings import ConfigError, load_settings

    try:
        return load_settings(config)
    except ConfigError as error:
        print(str(error), file=sys.stderr)
        return None


def _command_modules() -> list[ModuleType]:
    return [importlib.import_module(f"{__name__}.{name}") for name in COMMANDS]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="choria-broker-adapters",
        description=(
            "Run Choria protocol adapters: read Choria registration and reply messages from the "
            "Choria network and store them in NATS JetStream, configured with the same broker.conf "
            "keys as the Go Choria broker (plugin.choria.adapter.NAME.*)."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in _command_modules():
        sub = subparsers.add_parser(
            module.NAME,
            help=module.HELP,
            description=getattr(module, "DESCRIPTION", module.HELP),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_arguments(sub)
        sub.set_defaults(handler=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from choria_broker_adapters.process.lifecycle import stop_signals

    # Until `run` has its event loop handlers (importing the commands alone takes a while),
    # SIGTERM/SIGINT are recorded: `run` then stops at once, other commands exit 130.
    stop_signals.received = None
    stop_signals.install()
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if getattr(args, "command", None) != "run":
            stop_signals.restore_defaults()
            if stop_signals.received:
                return 130
        if not getattr(args, "handler", None):
            parser.print_help(sys.stderr)
            return EXIT_USAGE
        return int(args.handler(args))
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return EXIT_OK
