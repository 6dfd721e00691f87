"""Describing exceptions in one line for logs and reports."""

from __future__ import annotations


def describe_exception(exc: BaseException) -> str:
    """`Type: message`, or just the type name when the exception has no text."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
