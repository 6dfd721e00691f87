"""jetstream.plan: merging adapters into streams, cross-adapter problems, diff classification.

Subject rules are tests/test_subjects.py; single-adapter value checks are tests/test_settings.py."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import pytest

from choria_broker_adapters.jetstream.plan import (
    Action,
    DesiredStream,
    batching_note,
    diff_stream,
    for_server,
    plan_change,
    plan_streams,
    updated_config,
)

WEEK = 7 * 24 * 3600.0


@dataclass(frozen=True)
class StandInAdapter:
    """The stream fields of settings.AdapterSettings, with the documented defaults."""

    name: str = "node_data"
    stream_topic: str = "choria.node_metadata.%s"
    stream_name: str = "CHORIA_NODE_DATA"
    stream_subjects: tuple[str, ...] = ()
    stream_max_age: float = WEEK
    stream_storage: str = "file"
    stream_replicas: int = 1
    stream_max_msgs_per_subject: int = -1
    stream_duplicate_window: float = 120.0


def test_default_adapter_plans_one_stream() -> None:
    plan = plan_streams([StandInAdapter()])
    assert plan.problems == ()
    (stream,) = plan.streams
    assert stream == DesiredStream(
        name="CHORIA_NODE_DATA",
        subjects=("choria.node_metadata.>",),
        max_age=WEEK,
        storage="file",
        num_replicas=1,
        max_msgs_per_subject=-1,
        duplicate_window=120.0,
        adapters=("node_data",),
    )
    assert plan.stream_of_adapter == {"node_data": "CHORIA_NODE_DATA"}
    config = stream.create_config()
    assert config["max_age"] == 604_800 * 10**9
    assert config["duplicate_window"] == 120 * 10**9
    assert (config["retention"], config["discard"], config["subjects"]) == (
        "limits",
        "old",
        ["choria.node_metadata.>"],
    )


def test_explicit_subjects_win_over_topic() -> None:
    adapter = StandInAdapter(stream_topic="a.%s.b", stream_subjects=("a.>",))
    plan = plan_streams([adapter])
    assert plan.problems == ()
    assert plan.streams[0].subjects == ("a.>",)


def test_adapters_sharing_a_stream_merge_subjects() -> None:
    plan = plan_streams(
        [
            StandInAdapter(name="one", stream_topic="choria.one.%s", stream_name="SHARED"),
            StandInAdapter(name="two", stream_topic="choria.two.%s", stream_name="SHARED"),
            StandInAdapter(name="three", stream_topic="choria.one.x", stream_name="SHARED"),
        ]
    )
    assert plan.problems == ()
    (stream,) = plan.streams
    # choria.one.x is already captured by choria.one.>, so it is not listed twice.
    assert stream.subjects == ("choria.one.>", "choria.two.>")
    assert stream.adapters == ("one", "two", "three")


def with_changes(**changes: Any) -> StandInAdapter:
    return dataclasses.replace(StandInAdapter(), **changes)


@pytest.mark.parametrize(
    ("adapters", "problem_words"),
    [
        (
            [
                StandInAdapter(name="one", stream_topic="x.one.%s", stream_name="S"),
                StandInAdapter(name="two", stream_topic="x.two.%s", stream_name="S", stream_max_age=60),
            ],
            "share stream S but set stream.max_age differently (one=168h, two=1m)",
        ),
        (
            [
                StandInAdapter(name="one", stream_topic="x.one.%s", stream_name="S"),
                StandInAdapter(name="two", stream_topic="x.two.%s", stream_name="S", stream_storage="memory"),
            ],
            "stream.storage differently",
        ),
        (
            [
                StandInAdapter(name="one", stream_topic="x.%s", stream_name="A"),
                StandInAdapter(name="two", stream_topic="x.y.%s", stream_name="B"),
            ],
            "overlapping subjects (x.> / x.y.>)",
        ),
        ([with_changes(stream_subjects=("other.>",))], "do not capture choria.node_metadata.>"),
        ([with_changes(stream_max_age=60, stream_duplicate_window=120)], "longer than stream.max_age"),
    ],
)
def test_plan_problems(adapters: list[StandInAdapter], problem_words: str) -> None:
    plan = plan_streams(adapters)
    assert any(problem_words in problem for problem in plan.problems), plan.problems


def test_zero_duplicate_window_means_server_default_capped_by_max_age() -> None:
    assert (
        plan_streams([with_changes(stream_duplicate_window=0)]).streams[0].effective_duplicate_window == 120
    )
    short = plan_streams([with_changes(stream_duplicate_window=0, stream_max_age=30)]).streams[0]
    assert short.effective_duplicate_window == 30


def stored_config(stream: DesiredStream, **overrides: Any) -> dict[str, Any]:
    """What nats-server 2.15 returns for a stream created from `stream` (plus unmanaged fields)."""
    return {
        **stream.create_config(),
        "max_consumers": -1,
        "max_msg_size": -1,
        "compression": "none",
        "description": "set by hand",
        "metadata": {"_nats.ver": "2.15.1"},
        "sealed": False,
        **overrides,
    }


DEFAULT_STREAM = plan_streams([StandInAdapter()]).streams[0]


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({}, []),
        ({"max_age": 168 * 3600 * 10**9}, []),
        ({"max_age": 336 * 3600 * 10**9}, ["max_age 336h → 168h"]),
        ({"max_age": 0}, ["max_age unlimited → 168h"]),
        ({"subjects": ["choria.old.>"]}, ["subjects choria.old.> → choria.node_metadata.>"]),
        ({"num_replicas": 3}, ["num_replicas 3 → 1"]),
        ({"max_msgs_per_subject": 1}, ["max_msgs_per_subject 1 → unlimited"]),
        ({"max_msgs_per_subject": 0}, []),
        ({"duplicate_window": 90 * 10**9}, ["duplicate_window 1m30s → 2m"]),
        ({"discard": "new"}, ["discard new → old"]),
        ({"retention": "interest"}, ["retention interest → limits"]),
        ({"storage": "memory"}, ["storage memory → file (refused)"]),
        ({"retention": "workqueue"}, ["retention workqueue → limits (refused)"]),
        ({"allow_direct": False}, ["allow_direct off → on"]),
        ({"allow_direct": None}, ["allow_direct off → on"]),
    ],
)
def test_diff_classifies_each_change(overrides: dict[str, Any], expected: list[str]) -> None:
    changes = diff_stream(DEFAULT_STREAM, stored_config(DEFAULT_STREAM, **overrides))
    assert [change.describe() + ("" if change.in_place else " (refused)") for change in changes] == expected


@pytest.mark.parametrize(
    ("api_level", "stored", "expected", "note"),
    [
        (5, {"allow_batched": True}, [], ""),
        (4, {"allow_batched": False}, ["allow_batched off → on"], ""),
        (4, {}, ["allow_batched off → on"], ""),
        # Older servers refuse the field: it is neither sent nor compared.
        (3, {}, [], "JetStream API level is 3"),
        (None, {}, [], "JetStream API level is unknown"),
    ],
)
def test_allow_batched_only_on_servers_that_know_it(
    api_level: int | None, stored: dict[str, Any], expected: list[str], note: str
) -> None:
    stream = for_server(DEFAULT_STREAM, api_level)
    existing = {key: value for key, value in stored_config(stream, **stored).items() if value is not None}
    if "allow_batched" not in stored:
        existing.pop("allow_batched", None)
    assert [change.describe() for change in diff_stream(stream, existing)] == expected
    assert ("allow_batched" in stream.create_config()) is (api_level is not None and api_level >= 4)
    assert note in batching_note(stream, api_level)
    assert bool(batching_note(stream, api_level)) is bool(note)


def test_subject_order_is_not_a_change() -> None:
    stream = dataclasses.replace(DEFAULT_STREAM, subjects=("a.>", "b.>"))
    assert diff_stream(stream, stored_config(stream, subjects=["b.>", "a.>"])) == ()


@pytest.mark.parametrize(
    ("existing", "action", "line"),
    [
        (None, Action.CREATE, "created CHORIA_NODE_DATA: subjects choria.node_metadata.>, max_age 168h"),
        ({}, Action.UP_TO_DATE, "CHORIA_NODE_DATA: up to date"),
        (
            {"max_age": 336 * 3600 * 10**9, "discard": "new"},
            Action.UPDATE,
            "updated CHORIA_NODE_DATA: max_age 336h → 168h, discard new → old",
        ),
        (
            {"storage": "memory", "max_age": 0},
            Action.REFUSE,
            "refused CHORIA_NODE_DATA: storage memory → file: JetStream cannot change the storage type",
        ),
        ({"mirror": {"name": "ORIGIN"}, "max_age": 0}, Action.REFUSE, "is a mirror"),
        ({"sealed": True, "max_age": 0}, Action.REFUSE, "is sealed"),
        # A mirror already matching the configuration is left alone, not refused.
        ({"mirror": {"name": "ORIGIN"}}, Action.UP_TO_DATE, "up to date"),
    ],
)
def test_plan_change(existing: dict[str, Any] | None, action: Action, line: str) -> None:
    config = None if existing is None else stored_config(DEFAULT_STREAM, **existing)
    change = plan_change(DEFAULT_STREAM, config)
    assert change.action is action
    assert line in change.describe()


def test_refusal_changes_nothing_and_explains_the_way_out() -> None:
    change = plan_change(DEFAULT_STREAM, stored_config(DEFAULT_STREAM, storage="memory", max_age=0))
    assert "nothing was changed" in change.describe()
    assert "nats stream rm CHORIA_NODE_DATA" in change.describe()


def test_dry_run_wording() -> None:
    change = plan_change(DEFAULT_STREAM, stored_config(DEFAULT_STREAM, max_age=0))
    assert change.describe(dry_run=True) == "would update CHORIA_NODE_DATA: max_age unlimited → 168h"


def test_update_keeps_settings_made_elsewhere() -> None:
    existing = stored_config(DEFAULT_STREAM, max_age=0, max_bytes=10**9)
    body = updated_config(DEFAULT_STREAM, existing)
    assert body["max_age"] == 168 * 3600 * 10**9
    assert (body["description"], body["max_bytes"], body["compression"]) == ("set by hand", 10**9, "none")
