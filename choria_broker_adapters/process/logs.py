"""Logging as the Go broker does it: text on the console, JSON lines in a log file.

This module configures handlers and formats; the loggers that add the adapter, side and
worker instance to every line, and the rate limiter, are `core.log`, used by every layer.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any, TextIO

from choria_broker_adapters.core.log import CONTEXT_FIELDS, ROOT_LOGGER

LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "error": logging.ERROR,
    "fatal": logging.CRITICAL,
}
CONSOLE_TARGETS = {"stdout", "stderr", "discard"}


# LogRecord's own `process` attribute is the pid; the runtime's process index travels as
# `process_index` and is written as `process=<index>`.
PROCESS_INDEX_FIELD = "process_index"


def _context(record: logging.LogRecord) -> dict[str, Any]:
    context = {
        name: getattr(record, name) for name in CONTEXT_FIELDS if getattr(record, name, None) is not None
    }
    index = getattr(record, PROCESS_INDEX_FIELD, None)
    return context if index is None else {"process": index, **context}


class _ProcessIndexFilter(logging.Filter):
    """Marks every line with the index of the runtime process that wrote it (multi-process runs)."""

    def __init__(self, index: int) -> None:
        super().__init__()
        self.index = index

    def filter(self, record: logging.LogRecord) -> bool:
        setattr(record, PROCESS_INDEX_FIELD, self.index)
        return True


class TextFormatter(logging.Formatter):
    """`time=... level=... msg="..." adapter=... side=... instance=...` like logrus' text format."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(record.created))
        parts = [
            f"time={stamp}",
            f"level={record.levelname.lower()}",
            f"msg={json.dumps(record.getMessage())}",
        ]
        parts += [f"{key}={value}" for key, value in _context(record).items()]
        if record.exc_info:
            parts.append(f"error={json.dumps(self.formatException(record.exc_info))}")
        return " ".join(parts)


class JSONFormatter(logging.Formatter):
    """One JSON object per line with sorted keys, like logrus' JSON format."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "level": "warning" if record.levelno == logging.WARNING else record.levelname.lower(),
            "msg": record.getMessage(),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(record.created)),
            **_context(record),
        }
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry, sort_keys=True)


def configure(
    logfile: str,
    loglevel: str,
    *,
    debug: bool = False,
    stream: TextIO | None = None,
    process_index: int | None = None,
) -> None:
    """Point the package's loggers at the configured target (the edge: opens the log file).
    With `process_index`, every line carries `process=<index>`."""
    logger = logging.getLogger(ROOT_LOGGER)
    logger.handlers.clear()
    logger.propagate = False
    logger.setLevel(logging.DEBUG if debug else LEVELS.get(loglevel, logging.WARNING))
    target = logfile.lower()
    handler: logging.Handler
    if target == "discard":
        handler = logging.NullHandler()
    elif target in CONSOLE_TARGETS:
        handler = logging.StreamHandler(stream or (sys.stderr if target == "stderr" else sys.stdout))
        handler.setFormatter(TextFormatter())
    else:
        handler = logging.FileHandler(logfile, encoding="utf-8")
        handler.setFormatter(JSONFormatter())
    if process_index is not None:
        handler.addFilter(_ProcessIndexFilter(process_index))
    logger.addHandler(handler)


def reopen_log_files() -> list[str]:
    """Close and reopen every log file the package writes (after logrotate moved it away);
    returns their paths. Console and discard targets are left as they are."""
    logger = logging.getLogger(ROOT_LOGGER)
    reopened = []
    for handler in list(logger.handlers):
        if not isinstance(handler, logging.FileHandler):
            continue
        fresh = logging.FileHandler(handler.baseFilename, encoding=handler.encoding)
        fresh.setFormatter(handler.formatter)
        for log_filter in handler.filters:
            fresh.addFilter(log_filter)
        logger.addHandler(fresh)
        logger.removeHandler(handler)
        handler.close()
        reopened.append(handler.baseFilename)
    return reopened
