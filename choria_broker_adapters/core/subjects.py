"""NATS subject rules: what may be subscribed to, published to, captured by a stream, and how
an adapter's `stream.topic` becomes per-node subjects. Every subject check in the package is here.

* Patterns (ingest topics, stream subjects) may hold whole-token wildcards, `>` only last.
* Publish subjects are literal: no wildcards, whitespace or control characters, no empty
  token, and at most MAX_SUBJECT_BYTES (a longer one risks the server's control-line limit,
  which closes the connection instead of refusing one message).
* A topic whose last token is exactly `%s` is captured by `<prefix>.>`: node identities contain
  dots, so `*` would miss most of them. Any other use of `%s` needs explicit stream subjects.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

NODE_PLACEHOLDER = "%s"
MAX_SUBJECT_BYTES = 1024
_WHITESPACE = re.compile(r"\s")


def pattern_problem(subject: str) -> str | None:
    """Why `subject` is not a valid subscription or stream subject (wildcards allowed), or None."""
    if not subject:
        return "it is empty"
    if _WHITESPACE.search(subject):
        return "it contains whitespace"
    tokens = subject.split(".")
    if any(token == "" for token in tokens):
        return "it has an empty token (leading, trailing or double dot)"
    for position, token in enumerate(tokens):
        if token == ">" and position != len(tokens) - 1:
            return "'>' may only be the last token"
        if token not in ("*", ">") and ("*" in token or ">" in token):
            return f"wildcards must be whole tokens ({token!r})"
    return None


def publish_problem(subject: str) -> str | None:
    """Why `subject` is not a safe literal publish subject, or None (on the per-message path)."""
    if not subject:
        return "it is empty"
    size = len(subject) if subject.isascii() else len(subject.encode("utf-8", "surrogatepass"))
    if size > MAX_SUBJECT_BYTES:
        return f"it is longer than {MAX_SUBJECT_BYTES} bytes"
    if "*" in subject or ">" in subject:
        return "it contains a wildcard ('*' or '>'), which cannot be published to"
    # After isprintable() the only ASCII whitespace left to find is the space itself.
    if not subject.isprintable() or (" " in subject if subject.isascii() else _WHITESPACE.search(subject)):
        return "it contains whitespace or control characters"
    if subject[0] == "." or subject[-1] == "." or ".." in subject:
        return "it has an empty token (leading, trailing or double dot)"
    return None


def topic_problem(topic: str) -> str | None:
    """Why `topic` is not a publish subject once each `%s` is replaced by an identity, or None."""
    return publish_problem(topic.replace(NODE_PLACEHOLDER, "sender"))


def node_subject(topic: str, sender: str) -> tuple[str, str | None]:
    """(`topic` with every `%s` replaced by `sender`, why that subject is unsafe or None)."""
    subject = topic.replace(NODE_PLACEHOLDER, sender)
    return subject, publish_problem(subject)


def derivation_problem(topic: str) -> str | None:
    """Why stream subjects cannot be derived from `topic` (a sentence naming the fix), or None."""
    if not topic:
        return "stream.topic is empty: set stream.topic (e.g. choria.node_metadata.%s)"
    shown = f"stream.topic {topic!r}"
    placeholders = topic.count(NODE_PLACEHOLDER)
    tokens = topic.split(".")
    if placeholders == 0 or (placeholders == 1 and tokens[-1] == NODE_PLACEHOLDER):
        if placeholders and len(tokens) == 1:
            return (
                f"{shown} is only the node identity: its stream would capture every subject; "
                "use a prefix (e.g. choria.node_metadata.%s) or set stream.subjects explicitly"
            )
        literal = ".".join(tokens[:-1]) if placeholders else topic
        problem = pattern_problem(literal)
        if problem is not None:
            return f"{shown}: {problem}"
        if "*" in tokens or ">" in tokens:
            return f"{shown} contains a wildcard: adapters publish to it, so it must be a literal subject"
        return None
    if placeholders > 1:
        reason = "uses %s more than once"
    elif NODE_PLACEHOLDER in tokens:
        reason = "has %s before the last token"
    else:
        reason = "has %s inside a token"
    return (
        f"{shown} {reason}, so the stream subjects cannot be derived "
        "(node identities contain dots, a '*' would not match them): set stream.subjects explicitly"
    )


def derive_subjects(topic: str) -> tuple[str, ...]:
    """The stream subjects that capture everything published to `topic`; ValueError when
    `derivation_problem` finds one. `choria.node_metadata.%s` → (`choria.node_metadata.>`,)."""
    problem = derivation_problem(topic)
    if problem is not None:
        raise ValueError(problem)
    tokens = topic.split(".")
    if tokens[-1] == NODE_PLACEHOLDER:
        return (".".join([*tokens[:-1], ">"]),)
    return (topic,)


def subjects_overlap(first: str, second: str) -> bool:
    """Whether some subject matches both patterns (JetStream refuses overlapping streams)."""
    first_tokens, second_tokens = first.split("."), second.split(".")
    for position, first_token in enumerate(first_tokens):
        if position >= len(second_tokens):
            return False
        second_token = second_tokens[position]
        if first_token == ">" or second_token == ">":
            return True
        if first_token != second_token and "*" not in (first_token, second_token):
            return False
    return len(first_tokens) == len(second_tokens)


def subject_covers(general: str, specific: str) -> bool:
    """Whether every subject matching `specific` also matches `general`."""
    general_tokens, specific_tokens = general.split("."), specific.split(".")
    for position, general_token in enumerate(general_tokens):
        if position >= len(specific_tokens):
            return False
        specific_token = specific_tokens[position]
        if general_token == ">":
            return True
        if specific_token == ">":
            return False
        if general_token == "*":
            continue
        if general_token != specific_token:
            return False
    return len(general_tokens) == len(specific_tokens)


def uncaptured_subjects(wanted: Iterable[str], stream_subjects: Iterable[str]) -> tuple[str, ...]:
    """The `wanted` subjects no single stream subject fully covers (empty: all captured)."""
    available = tuple(stream_subjects)
    return tuple(
        subject for subject in wanted if not any(subject_covers(have, subject) for have in available)
    )


def merge_subjects(subjects: Iterable[str]) -> tuple[str, ...]:
    """Subjects in first-seen order without duplicates or subjects another one already covers."""
    unique = list(dict.fromkeys(subjects))
    return tuple(
        subject
        for subject in unique
        if not any(other != subject and subject_covers(other, subject) for other in unique)
    )
