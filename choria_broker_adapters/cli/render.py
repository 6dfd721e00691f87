"""`choria-broker-adapters render`: hiera-style YAML → broker.conf, without Puppet."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
from pathlib import Path

import yaml

from choria_broker_adapters.config.render import RenderError, render_broker_config
from choria_broker_adapters.core.exits import EXIT_CONFIG, EXIT_FAILURE, EXIT_OK

NAME = "render"
HELP = "write broker.conf from hiera-style YAML, exactly as Puppet's choria::broker would"
DESCRIPTION = """\
Render broker.conf from the hiera keys of the Puppet class choria::broker
(choria::broker::adapters, choria::broker::identity, ...). The file is byte for byte
what Puppet writes for the same data, and the data is checked with the same rules as
the Puppet types: a bad value fails with the key named and exit status 78.

Keys of other classes in the file are ignored, so a site's hiera file can be used as is.
Unlike Puppet, render has no node certname: give choria::broker::identity, or the line
is left out and the runtime derives the identity from the host name.

example data (adapters.yaml):
  choria::broker::identity: broker1.example.net
  choria::broker::middleware_hosts: ["nats1.example.net:4222"]
  choria::broker::adapters:
    node_data:
      type: choria_streams
      ingest: {topic: choria.broadcast.agent.registration, protocol: request, workers: 10}
      stream: {topic: "choria.node_metadata.%s", workers: 10, servers: ["js1.example.net:4222"]}

examples:
  choria-broker-adapters render --data adapters.yaml
  choria-broker-adapters render --data adapters.yaml --output /etc/choria/broker.conf

--output replaces the file atomically (mode 0640) and leaves it untouched, modification
time included, when the content is already the same, so a service watching it is not
restarted for nothing. It prints whether the file changed.

exit status: 0 rendered, 1 file or YAML error, 78 invalid data (the key is named)
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data", required=True, type=Path, metavar="FILE.yaml", help="hiera-style YAML (use - for stdin)"
    )
    parser.add_argument(
        "--output",
        type=Path,
        metavar="FILE",
        help="write here (atomically, mode 0640) instead of standard output",
    )


def write_if_changed(path: Path, content: str) -> bool:
    """Atomically replace `path` with `content` (mode 0640); False, touching nothing, if equal."""
    encoded = content.encode("utf-8")
    with contextlib.suppress(FileNotFoundError):
        if path.read_bytes() == encoded:
            return False
    # The temporary file lives next to the target so the rename stays on one file system.
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            os.fchmod(handle.fileno(), 0o640)
            handle.write(encoded)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    return True


def run(args: argparse.Namespace) -> int:
    try:
        text = sys.stdin.read() if str(args.data) == "-" else args.data.read_text(encoding="utf-8")
        data = yaml.safe_load(text)
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        print(f"render: cannot read {args.data}: {error}", file=sys.stderr)
        return EXIT_FAILURE
    try:
        content = render_broker_config({} if data is None else data)
    except RenderError as error:
        print(f"render: invalid data in {args.data}: {error}", file=sys.stderr)
        return EXIT_CONFIG
    if args.output is None:
        sys.stdout.write(content)
        return EXIT_OK
    try:
        changed = write_if_changed(args.output, content)
    except OSError as error:
        print(f"render: cannot write {args.output}: {error}", file=sys.stderr)
        return EXIT_FAILURE
    print(f"{args.output}: {'written' if changed else 'unchanged'}", file=sys.stderr)
    return EXIT_OK
