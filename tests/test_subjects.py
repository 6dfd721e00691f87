"""core.subjects: the one home of every NATS subject rule."""

from __future__ import annotations

import pytest

from choria_broker_adapters.core.subjects import (
    MAX_SUBJECT_BYTES,
    derivation_problem,
    derive_subjects,
    merge_subjects,
    node_subject,
    pattern_problem,
    publish_problem,
    subject_covers,
    subjects_overlap,
    topic_problem,
    uncaptured_subjects,
)


@pytest.mark.parametrize(
    ("topic", "subjects"),
    [
        ("choria.node_metadata.%s", ("choria.node_metadata.>",)),
        ("js.in.discovery.%s", ("js.in.discovery.>",)),
        ("x.%s", ("x.>",)),
        ("choria.registration", ("choria.registration",)),
        ("node_data", ("node_data",)),
    ],
)
def test_derive_subjects(topic: str, subjects: tuple[str, ...]) -> None:
    assert derive_subjects(topic) == subjects
    assert derivation_problem(topic) is None


@pytest.mark.parametrize(
    ("topic", "problem_words"),
    [
        ("a.%s.b", "before the last token"),
        ("a.x%s", "inside a token"),
        ("a.%s.%s", "more than once"),
        ("%s", "every subject"),
        ("", "empty"),
        ("a..b", "empty token"),
        ("a.*.b", "wildcard"),
        ("a.>", "wildcard"),
        ("a.b c", "whitespace"),
        ("a.*.%s", "wildcard"),
    ],
)
def test_topics_that_need_explicit_subjects(topic: str, problem_words: str) -> None:
    problem = derivation_problem(topic)
    assert problem is not None and problem_words in problem
    with pytest.raises(ValueError, match=problem_words):
        derive_subjects(topic)


def test_misplaced_placeholder_names_the_fix() -> None:
    assert "set stream.subjects" in (derivation_problem("a.%s.b") or "")


@pytest.mark.parametrize(
    ("first", "second", "overlap"),
    [
        ("a.>", "a.b", True),
        ("a.>", "a", False),
        ("a.*", "a.b", True),
        ("a.*", "a.b.c", False),
        ("a.b", "a.c", False),
        ("a.>", "b.>", False),
        ("*.b", "a.*", True),
        (">", "x.y", True),
        ("a.b", "a.b", True),
    ],
)
def test_subjects_overlap(first: str, second: str, overlap: bool) -> None:
    assert subjects_overlap(first, second) is overlap
    assert subjects_overlap(second, first) is overlap


@pytest.mark.parametrize(
    ("general", "specific", "covers"),
    [
        ("a.>", "a.b.c", True),
        ("a.>", "a.>", True),
        ("a.>", "a.*", True),
        ("a.*", "a.>", False),
        ("a.*", "a.b", True),
        ("a.b", "a.*", False),
        ("a.>", "a", False),
        ("a.b", "a.b", True),
        ("a.b", "a.b.c", False),
        (">", "x", True),
    ],
)
def test_subject_covers(general: str, specific: str, covers: bool) -> None:
    assert subject_covers(general, specific) is covers


def test_uncaptured_subjects() -> None:
    assert uncaptured_subjects(["a.>", "b.c"], ["a.>", "b.*"]) == ()
    assert uncaptured_subjects(["a.>", "c"], ["a.x.>"]) == ("a.>", "c")


@pytest.mark.parametrize(
    ("subject", "problem"),
    [
        ("a.b", None),
        ("a.*.c", None),
        ("a.>", None),
        (">", None),
        ("", "empty"),
        ("a..b", "empty token"),
        (".a", "empty token"),
        ("a b", "whitespace"),
        ("a.>.b", "'>' may only be the last token"),
        ("a.b*", "whole tokens"),
    ],
)
def test_pattern_problem(subject: str, problem: str | None) -> None:
    found = pattern_problem(subject)
    assert (found is None) if problem is None else (found is not None and problem in found)


@pytest.mark.parametrize(
    ("subject", "problem"),
    [
        ("choria.node_metadata.web1.example.net", None),
        ("", "empty"),
        ("a.*", "wildcard"),
        ("a.>", "wildcard"),
        ("a b", "whitespace"),
        ("a\tb", "whitespace"),
        ("a\u2028b", "whitespace"),
        ("a\x00b", "control"),
        ("a..b", "empty token"),
        ("a.", "empty token"),
        ("a" * (MAX_SUBJECT_BYTES + 1), "longer than"),
        ("é" * (MAX_SUBJECT_BYTES // 2 + 1), "longer than"),
    ],
)
def test_publish_problem(subject: str, problem: str | None) -> None:
    found = publish_problem(subject)
    assert (found is None) if problem is None else (found is not None and problem in found)


def test_topics_and_node_subjects() -> None:
    assert topic_problem("choria.node_metadata.%s") is None
    assert topic_problem("choria.%s.x.%s") is None
    assert "wildcard" in (topic_problem("choria.*.%s") or "")
    assert node_subject("choria.node_metadata.%s", "web1.example.net") == (
        "choria.node_metadata.web1.example.net",
        None,
    )
    subject, problem = node_subject("r.%s", "a.>")
    assert subject == "r.a.>" and problem is not None and "wildcard" in problem


def test_merge_subjects_drops_duplicates_and_covered_ones() -> None:
    assert merge_subjects(["a.>", "a.b", "c", "a.>", "c"]) == ("a.>", "c")
