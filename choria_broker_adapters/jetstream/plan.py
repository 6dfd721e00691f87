"""Adapter settings → desired JetStream streams, and what changing an existing stream means.

Pure: no I/O, no network imports. `jetstream.admin` applies what this module decides. It
takes validated settings and never re-checks them: names, subjects and value ranges are the
settings layer's business (with the rules in `core`); only what concerns several adapters
together, or a stream against its configuration, is decided here.

Decisions documented here because operators meet them as messages:

* Subjects: derived from `stream.topic` by `core.subjects.derive_subjects` unless given.
* Several adapters naming the same `stream.name` (on the same servers) share one stream: their
  subjects are merged; every other stream setting must agree, otherwise the plan is refused
  with the adapters and values named. Merging is what operators expect from "these adapters
  all feed CHORIA_REGISTRATION"; silently picking one adapter's max_age would not be.
* Only the fields the configuration describes are managed (subjects, max_age, storage,
  replicas, max_msgs_per_subject, duplicate_window, retention=limits, discard=old, and
  allow_direct=true, which `nodes` needs to read each node's last message in batches; and
  allow_batched=true for fast-ingest publishing where the server supports it: the admin side
  sets `allow_batched` on the desired stream only then, because servers before 2.14 refuse
  the field). An update
  starts from the stream's current configuration, so settings made by hand elsewhere
  (description, compression, max_bytes, ...) survive.
* Changes JetStream cannot make in place (verified against nats-server 2.15.1): the storage
  type; retention to or from workqueue; anything on a mirror or a sealed stream. They are
  refused for the whole stream: nothing of it is changed, so it is never left half-updated.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any, Protocol

from choria_broker_adapters.core.durations import format_duration
from choria_broker_adapters.core.subjects import (
    derivation_problem,
    derive_subjects,
    merge_subjects,
    subjects_overlap,
    uncaptured_subjects,
)

NANOSECONDS = 1_000_000_000
# The JetStream API level from which streams take `allow_batched` (fast-ingest, nats-server 2.14).
FAST_INGEST_API_LEVEL = 4
# nats-server's default duplicate window, applied when the configured one is 0.
SERVER_DEFAULT_DUPLICATE_WINDOW = 120.0


class AdapterStreamSettings(Protocol):
    """The part of `settings.AdapterSettings` provisioning reads."""

    @property
    def name(self) -> str: ...
    @property
    def stream_topic(self) -> str: ...
    @property
    def stream_name(self) -> str: ...
    @property
    def stream_subjects(self) -> Sequence[str]: ...
    @property
    def stream_max_age(self) -> float: ...
    @property
    def stream_storage(self) -> str: ...
    @property
    def stream_replicas(self) -> int: ...
    @property
    def stream_max_msgs_per_subject(self) -> int: ...
    @property
    def stream_duplicate_window(self) -> float: ...


# --------------------------------------------------------------------------- desired streams


@dataclass(frozen=True)
class DesiredStream:
    """One stream as the configuration describes it. Durations in seconds, -1 = unlimited."""

    name: str
    subjects: tuple[str, ...]
    max_age: float
    storage: str
    num_replicas: int
    max_msgs_per_subject: int
    duplicate_window: float
    adapters: tuple[str, ...] = ()
    retention: str = "limits"
    discard: str = "old"
    allow_direct: bool = True
    # Fast-ingest batch publishing; only set for servers that know the option (API level 4+).
    allow_batched: bool = False

    @property
    def effective_duplicate_window(self) -> float:
        """The window nats-server will store: 0 means its 2-minute default, capped by max_age."""
        window = self.duplicate_window or SERVER_DEFAULT_DUPLICATE_WINDOW
        if self.max_age > 0 and not self.duplicate_window:
            window = min(window, self.max_age)
        return window

    def managed_values(self) -> dict[str, Any]:
        """Managed fields in JetStream API units (nanoseconds), as nats-server stores them."""
        return {
            "subjects": list(self.subjects),
            "retention": self.retention,
            "storage": self.storage,
            "num_replicas": self.num_replicas,
            "max_age": _to_nanoseconds(self.max_age),
            "max_msgs_per_subject": self.max_msgs_per_subject,
            "duplicate_window": _to_nanoseconds(self.effective_duplicate_window),
            "discard": self.discard,
            "allow_direct": self.allow_direct,
            **({"allow_batched": True} if self.allow_batched else {}),
        }

    def create_config(self) -> dict[str, Any]:
        """The JetStream API body for STREAM.CREATE."""
        return {"name": self.name, **self.managed_values(), "max_msgs": -1, "max_bytes": -1}


def for_server(stream: DesiredStream, api_level: int | None) -> DesiredStream:
    """The stream as a server at `api_level` can hold it: `allow_batched` where it exists."""
    supported = api_level is not None and api_level >= FAST_INGEST_API_LEVEL
    return replace(stream, allow_batched=supported)


def batching_note(stream: DesiredStream, api_level: int | None) -> str:
    """Why `streams setup` could not allow fast-ingest batches ("" when it did: the change says so)."""
    if stream.allow_batched:
        return ""
    shown = "unknown" if api_level is None else str(api_level)
    return (
        f"{stream.name}: allow_batched not set: this server's JetStream API level is {shown}, fast-ingest "
        f"batches need {FAST_INGEST_API_LEVEL} (nats-server 2.14+); adapters publish with per-message "
        "acknowledgements"
    )


def _to_nanoseconds(seconds: float) -> int:
    return round(seconds * NANOSECONDS)


def desired_stream(adapter: AdapterStreamSettings) -> DesiredStream:
    """The stream one adapter wants (settings guarantee its subjects are known)."""
    subjects = tuple(adapter.stream_subjects) or derive_subjects(adapter.stream_topic)
    max_msgs_per_subject = adapter.stream_max_msgs_per_subject
    return DesiredStream(
        name=adapter.stream_name,
        subjects=subjects,
        max_age=float(adapter.stream_max_age),
        storage=adapter.stream_storage,
        num_replicas=int(adapter.stream_replicas),
        # 0 and -1 both mean unlimited to nats-server; one spelling keeps diffs quiet.
        max_msgs_per_subject=-1 if max_msgs_per_subject <= 0 else int(max_msgs_per_subject),
        duplicate_window=float(adapter.stream_duplicate_window),
        adapters=(adapter.name,),
    )


# Settings that adapters sharing a stream must agree on: (DesiredStream attribute, config key).
SHARED_SETTINGS = (
    ("max_age", "stream.max_age"),
    ("storage", "stream.storage"),
    ("num_replicas", "stream.replicas"),
    ("max_msgs_per_subject", "stream.max_msgs_per_subject"),
    ("effective_duplicate_window", "stream.duplicate_window"),
)


@dataclass(frozen=True)
class StreamPlan:
    """The streams a set of adapters needs, or the problems that stop provisioning."""

    streams: tuple[DesiredStream, ...]
    problems: tuple[str, ...]
    # adapter name → stream name, for status and start-up checks.
    stream_of_adapter: Mapping[str, str] = field(default_factory=dict)


def plan_streams(adapters: Iterable[AdapterStreamSettings]) -> StreamPlan:
    """Desired streams for adapters that talk to the same JetStream servers.

    Adapters naming the same stream are merged (subjects united); disagreeing limits, invalid
    names or subjects, and subjects overlapping between different streams are problems.
    """
    problems: list[str] = []
    by_name: dict[str, list[DesiredStream]] = {}
    stream_of_adapter: dict[str, str] = {}
    for adapter in adapters:
        problem = _adapter_problem(adapter)
        if problem is not None:
            problems.append(problem)
            continue
        wanted = desired_stream(adapter)
        by_name.setdefault(wanted.name, []).append(wanted)
        stream_of_adapter[adapter.name] = wanted.name

    streams: list[DesiredStream] = []
    for name, wanted in by_name.items():
        merged, conflicts = _merge(name, wanted)
        problems.extend(conflicts)
        if merged is not None:
            problems.extend(_stream_problems(merged))
            streams.append(merged)
    problems.extend(_overlap_problems(streams))
    return StreamPlan(tuple(streams), tuple(problems), stream_of_adapter)


def _adapter_problem(adapter: AdapterStreamSettings) -> str | None:
    """Explicit stream subjects that miss where the adapter publishes: its messages would be lost."""
    if not adapter.stream_subjects or derivation_problem(adapter.stream_topic) is not None:
        return None
    missed = uncaptured_subjects(derive_subjects(adapter.stream_topic), adapter.stream_subjects)
    if not missed:
        return None
    return (
        f"adapter {adapter.name}: stream.subjects {', '.join(adapter.stream_subjects)} do not capture "
        f"{', '.join(missed)}, where stream.topic {adapter.stream_topic!r} publishes"
    )


def _merge(name: str, wanted: list[DesiredStream]) -> tuple[DesiredStream | None, list[str]]:
    first = wanted[0]
    conflicts: list[str] = []
    for attribute, key in SHARED_SETTINGS:
        values = {stream.adapters[0]: getattr(stream, attribute) for stream in wanted}
        if len(set(values.values())) > 1:
            shown = ", ".join(
                f"{adapter}={describe_value(attribute, value)}" for adapter, value in values.items()
            )
            conflicts.append(
                f"adapters {', '.join(values)} share stream {name} but set {key} differently ({shown}): "
                "give them the same value or different stream.name"
            )
    if conflicts:
        return None, conflicts
    merged = DesiredStream(
        name=name,
        subjects=merge_subjects(subject for stream in wanted for subject in stream.subjects),
        max_age=first.max_age,
        storage=first.storage,
        num_replicas=first.num_replicas,
        max_msgs_per_subject=first.max_msgs_per_subject,
        duplicate_window=first.duplicate_window,
        adapters=tuple(stream.adapters[0] for stream in wanted),
    )
    return merged, []


def _stream_problems(stream: DesiredStream) -> list[str]:
    owners = ", ".join(stream.adapters)
    problems: list[str] = []
    if stream.max_age > 0 and stream.duplicate_window > stream.max_age:
        problems.append(
            f"stream {stream.name} ({owners}): stream.duplicate_window "
            f"{format_duration(stream.duplicate_window)} is longer than stream.max_age "
            f"{format_duration(stream.max_age)}; JetStream refuses that"
        )
    return problems


def _overlap_problems(streams: Sequence[DesiredStream]) -> list[str]:
    problems = []
    for index, first in enumerate(streams):
        for second in streams[index + 1 :]:
            pairs = [(a, b) for a in first.subjects for b in second.subjects if subjects_overlap(a, b)]
            if pairs:
                shown = ", ".join(f"{a} / {b}" for a, b in pairs)
                problems.append(
                    f"streams {first.name} ({', '.join(first.adapters)}) and {second.name} "
                    f"({', '.join(second.adapters)}) have overlapping subjects ({shown}); JetStream "
                    "refuses that: use one stream.name for both or distinct topics"
                )
    return problems


# --------------------------------------------------------------------------- comparing


class Action(StrEnum):
    CREATE = "create"
    UPDATE = "update"
    UP_TO_DATE = "up to date"
    REFUSE = "refuse"


@dataclass(frozen=True)
class FieldChange:
    """One managed field that differs between the stream and the configuration."""

    field: str
    current: str
    desired: str
    refusal: str | None = None  # why JetStream cannot change it in place; None = updatable

    @property
    def in_place(self) -> bool:
        return self.refusal is None

    def describe(self) -> str:
        return f"{self.field} {self.current} → {self.desired}"


@dataclass(frozen=True)
class StreamChange:
    """What setup does (or would do) to one stream."""

    stream: DesiredStream
    action: Action
    changes: tuple[FieldChange, ...] = ()
    refusals: tuple[str, ...] = ()

    def describe(self, dry_run: bool = False) -> str:
        """One operator-facing line, e.g. 'updated CHORIA_NODE_DATA: max_age 168h → 336h'."""
        name = self.stream.name
        if self.action is Action.UP_TO_DATE:
            return f"{name}: up to date"
        if self.action is Action.CREATE:
            verb = "would create" if dry_run else "created"
            return f"{verb} {name}: {describe_desired(self.stream)}"
        if self.action is Action.UPDATE:
            verb = "would update" if dry_run else "updated"
            return f"{verb} {name}: {', '.join(change.describe() for change in self.changes)}"
        return f"refused {name}: {'; '.join(self.refusals)}"


def describe_value(field_name: str, value: Any) -> str:
    """A managed field's value as operators write it (durations like 168h, -1 as unlimited)."""
    if field_name in ("max_age", "duplicate_window", "effective_duplicate_window"):
        return "unlimited" if field_name == "max_age" and not value else format_duration(value)
    if field_name == "max_msgs_per_subject":
        return "unlimited" if value <= 0 else str(value)
    if field_name == "subjects":
        return ", ".join(value) if value else "(none)"
    if field_name in ("allow_direct", "allow_batched"):
        return "on" if value else "off"
    return str(value)


def describe_desired(stream: DesiredStream) -> str:
    return (
        f"subjects {describe_value('subjects', stream.subjects)}, "
        f"max_age {describe_value('max_age', stream.max_age)}, storage {stream.storage}, "
        f"replicas {stream.num_replicas}, "
        f"max_msgs_per_subject {describe_value('max_msgs_per_subject', stream.max_msgs_per_subject)}, "
        f"duplicate_window {format_duration(stream.effective_duplicate_window)}"
        + (", allow_batched on" if stream.allow_batched else "")
    )


def _from_api_value(field_name: str, value: Any) -> Any:
    """A stored config value in DesiredStream units (seconds, sorted subjects)."""
    if field_name in ("max_age", "duplicate_window"):
        return (value or 0) / NANOSECONDS
    if field_name == "subjects":
        return tuple(value or ())
    if field_name == "max_msgs_per_subject":
        return -1 if (value or 0) <= 0 else value
    if field_name in ("allow_direct", "allow_batched"):
        return bool(value)
    return value


def _refusal(field_name: str, current: Any, desired: Any) -> str | None:
    if field_name == "storage":
        return "JetStream cannot change the storage type of an existing stream"
    if field_name == "retention" and "workqueue" in (current, desired):
        return "JetStream cannot change retention to or from workqueue"
    return None


def diff_stream(stream: DesiredStream, existing_config: Mapping[str, Any]) -> tuple[FieldChange, ...]:
    """Managed fields whose stored value differs from the configuration, each classified."""
    changes: list[FieldChange] = []
    for field_name, wanted_api in stream.managed_values().items():
        current = _from_api_value(field_name, existing_config.get(field_name))
        desired = _from_api_value(field_name, wanted_api)
        same = sorted(current) == sorted(desired) if field_name == "subjects" else current == desired
        if same:
            continue
        changes.append(
            FieldChange(
                field=field_name,
                current=describe_value(field_name, current),
                desired=describe_value(field_name, desired),
                refusal=_refusal(field_name, current, desired),
            )
        )
    return tuple(changes)


def plan_change(stream: DesiredStream, existing_config: Mapping[str, Any] | None) -> StreamChange:
    """What setup must do to `stream` given its stored config (None when it does not exist)."""
    if existing_config is None:
        return StreamChange(stream, Action.CREATE)
    changes = diff_stream(stream, existing_config)
    refusals = [f"{change.describe()}: {change.refusal}" for change in changes if change.refusal is not None]
    if changes and existing_config.get("mirror"):
        refusals.append("it is a mirror of another stream and is not managed here")
    if changes and existing_config.get("sealed"):
        refusals.append("it is sealed and cannot be changed")
    if refusals:
        refusals.append(
            "nothing was changed; to apply, back up the messages, delete the stream "
            f"(`nats stream rm {stream.name}`) and run setup again, or keep the stream's value"
        )
        return StreamChange(stream, Action.REFUSE, changes, tuple(refusals))
    if changes:
        return StreamChange(stream, Action.UPDATE, changes)
    return StreamChange(stream, Action.UP_TO_DATE)


def updated_config(stream: DesiredStream, existing_config: Mapping[str, Any]) -> dict[str, Any]:
    """The STREAM.UPDATE body: the stored config with the managed fields replaced.

    Starting from the stored config keeps settings made elsewhere (description, compression,
    max_bytes, metadata, ...) instead of resetting them to defaults.
    """
    return {**existing_config, **stream.managed_values(), "name": stream.name}
