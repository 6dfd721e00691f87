"""The benchmark keeps working: its pure helpers, its input messages, and one tiny run.

No timing assertions: the figures depend on the machine; only shape and "nothing lost" are checked.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from bench import codec
from bench.harness import (
    BRIDGES,
    CEILINGS,
    TARGETS,
    BridgeContext,
    Trial,
    check_targets,
    ratios,
    runtime_data,
    runtime_ready,
    summarise,
)
from bench.messages import INPUTS, load_template, make_request_id, parse_request_id, sender_name
from bench.stats import (
    cpu_ticks_from_stat,
    per_10k,
    percentile,
    publish_modes,
    relative_rate,
    request_id_of,
    rfc3339_ns,
    status_kib,
    stored_time_ns,
)
from choria_broker_adapters.config.render import render_broker_config
from choria_broker_adapters.config.settings import load_settings

REPO = Path(__file__).resolve().parent.parent
BRIDGE_FIELDS = (
    "msgs_per_s",
    "mb_per_s",
    "lost",
    "p50_ms",
    "p99_ms",
    "paced_rate",
    "cpu_s_per_10k",
    "nats_cpu_s_per_10k",
    "steady_rss_mb_max_process",
    "peak_rss_mb_max_process",
)
CEILING_FIELDS = ("msgs_per_s", "mb_per_s", "lost", "cpu_s_per_10k", "nats_cpu_s_per_10k")


@pytest.mark.parametrize(
    ("values", "fraction", "expected"),
    [
        ([5.0], 0.5, 5.0),
        ([5.0], 0.99, 5.0),
        ([1.0, 2.0, 3.0, 4.0], 0.5, 2.0),
        ([1.0, 2.0, 3.0, 4.0], 0.51, 3.0),
        ([float(v) for v in range(1, 101)], 0.99, 99.0),
        ([float(v) for v in range(1, 101)], 1.0, 100.0),
        ([float(v) for v in range(1, 1001)], 0.99, 990.0),
    ],
)
def test_percentile_is_nearest_rank(values: list[float], fraction: float, expected: float) -> None:
    assert percentile(values, fraction) == expected


@pytest.mark.parametrize(("values", "fraction"), [([], 0.5), ([1.0], 0.0), ([1.0], 1.5)])
def test_percentile_rejects_nonsense(values: list[float], fraction: float) -> None:
    with pytest.raises(ValueError):
        percentile(values, fraction)


@pytest.mark.parametrize(
    ("stat", "ticks"),
    [
        ("1234 (python3) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 31 0 0 20 0 1 0 5 0", 281),
        ("99 (my (odd) name) R 1 99 99 0 -1 0 0 0 0 0 7 3 0 0 20 0 1 0 5 0", 10),
    ],
)
def test_cpu_ticks_are_utime_plus_stime(stat: str, ticks: int) -> None:
    assert cpu_ticks_from_stat(stat) == ticks


@pytest.mark.parametrize(
    ("key", "kib"),
    [("VmHWM", 51200), ("VmRSS", 40960), ("VmSwap", None)],
)
def test_status_kib(key: str, kib: int | None) -> None:
    status = "Name:\tpython\nVmPeak:\t  300000 kB\nVmHWM:\t   51200 kB\nVmRSS:\t   40960 kB\n"
    assert status_kib(status, key) == kib


@pytest.mark.parametrize(
    ("reply", "timestamp"),
    [
        ("$JS.ACK.BENCH.c1.1.17.17.1700000000123456789.4", 1700000000123456789),
        ("$JS.ACK.hub.ACC.BENCH.c1.1.17.17.1700000000123456789.4.r4nd", 1700000000123456789),
    ],
)
def test_stored_time_from_reply_subject(reply: str, timestamp: int) -> None:
    assert stored_time_ns(reply) == timestamp


@pytest.mark.parametrize("reply", ["", "_INBOX.abc.1", "$JS.ACK.too.short"])
def test_stored_time_rejects_other_subjects(reply: str) -> None:
    with pytest.raises(ValueError):
        stored_time_ns(reply)


@pytest.mark.parametrize(
    ("phase", "seq", "time_ns"),
    [("c", 0, 0), ("p", 12345, 1700000000123456789), ("w", 10**11 - 1, 10**20 - 1)],
)
def test_request_id_round_trip(phase: str, seq: int, time_ns: int) -> None:
    request_id = make_request_id(phase, seq, time_ns)
    assert len(request_id) == 32
    stamp = parse_request_id(request_id)
    assert stamp is not None
    assert (stamp.phase, stamp.seq, stamp.time_ns) == (phase, seq, time_ns)


@pytest.mark.parametrize("request_id", ["c8c2d5b3ab8b4a5d9c1f4f0b9f2f3e61", "c123", "c" + "1" * 32])
def test_foreign_request_ids_are_not_stamps(request_id: str) -> None:
    assert parse_request_id(request_id) is None


@pytest.mark.parametrize("input_name", sorted(INPUTS))
def test_generated_messages_decode_to_their_sender_and_request_id(input_name: str) -> None:
    template = load_template(input_name)
    request_id = make_request_id("c", 42, 1700000000123456789)
    output = json.loads(codec.encode(codec.decode(template.render(sender_name(42), request_id))))
    assert (output["sender"], output["requestid"]) == ("node00042.bench.example.net", request_id)
    example = REPO / "tests/data/protocol/examples" / INPUTS[input_name] / "expected_output.json"
    assert output["data"] == json.loads(example.read_bytes())["data"]  # the payload is untouched


@pytest.mark.parametrize(
    ("text", "nanoseconds"),
    [
        ("1970-01-01T00:00:00Z", 0),
        ("1970-01-01T00:00:01.5Z", 1_500_000_000),
        ("2026-12-02T17:30:00.123456789Z", 1796232600123456789),
        ("2026-12-02T17:30:00.000000001Z", 1796232600000000001),
    ],
)
def test_rfc3339_ns(text: str, nanoseconds: int) -> None:
    assert rfc3339_ns(text) == nanoseconds


@pytest.mark.parametrize("text", ["2026-12-02T17:30:00+01:00", "2026-12-02T17:30:00.1234567891Z", "nonsense"])
def test_rfc3339_ns_rejects_what_jetstream_does_not_write(text: str) -> None:
    with pytest.raises(ValueError):
        rfc3339_ns(text)


@pytest.mark.parametrize(
    ("value", "messages", "expected"),
    [(2.0, 40_000, 0.5), (0.3, 3_000, 1.0), (None, 1000, None), (1.0, 0, None)],
)
def test_per_10k(value: float | None, messages: int, expected: float | None) -> None:
    assert per_10k(value, messages) == expected


@pytest.mark.parametrize(
    ("capacity", "fraction", "rate"),
    [(10_440.0, 0.5, 5220.0), (6_087.0, 0.5, 3040.0), (41_113.0, 0.25, 10280.0), (3.0, 0.5, 10.0)],
)
def test_relative_rate(capacity: float, fraction: float, rate: float) -> None:
    assert relative_rate(capacity, fraction) == rate


@pytest.mark.parametrize(
    ("document", "modes"),
    [
        (None, []),
        ({"adapters": [{"name": "bench", "counts": {}}]}, []),
        ({"adapters": [{"name": "bench", "publish_mode": "batched"}]}, ["batched"]),
        ({"adapters": [{"name": "bench", "publish": {"mode": "acked", "setting": "auto"}}]}, ["acked"]),
        (
            {"processes": [{"adapters": [{"publish": "batched"}]}, {"adapters": [{"publish": "acked"}]}]},
            ["acked", "batched"],
        ),
        ({"adapters": [{"name": "batched", "type": "acked"}]}, []),  # not under a publish key
    ],
)
def test_publish_modes_found_under_any_publish_key(document: object, modes: list[str]) -> None:
    assert publish_modes(document) == modes


@pytest.mark.parametrize(
    "document",
    [
        b'{"protocol":"p","data":"{\\"requestid\\":\\"x\\"}","sender":"s","time":"t","requestid":"ID"}',
        b'{"requestid":"ID","protocol":"p","data":"d"}',  # another key order: parsed
        b'{"protocol":"p", "requestid": "ID"}',  # other spacing: parsed
    ],
)
def test_request_id_of_stored_documents(document: bytes) -> None:
    assert request_id_of(document) == json.loads(document)["requestid"] == "ID"


def test_request_id_of_an_escaped_value_is_parsed() -> None:
    assert request_id_of(b'{"data":"d","requestid":"a\\"b"}') == 'a"b'


def test_request_id_of_the_encoder_output() -> None:
    request_id = make_request_id("p", 7, 1700000000123456789)
    body = codec.encode(codec.decode(load_template("registration_1k").render(sender_name(7), request_id)))
    assert request_id_of(body) == request_id


def _state(ingest: int, stream: int) -> dict[str, object]:
    return {"name": "bench", "type": "jetstream", "ingest_connected": ingest, "stream_connected": stream}


@pytest.mark.parametrize(
    ("document", "processes", "ready"),
    [
        (None, 1, False),
        ({"adapters": [_state(10, 10)]}, 1, True),
        ({"adapters": [_state(9, 10)]}, 1, False),
        ({"adapters": [_state(10, 9)]}, 1, False),
        ({"adapters": [_state(10, 10)]}, 2, False),  # the children are not listed yet
        (
            {"adapters": [_state(20, 20)], "processes": [{"adapters": [_state(10, 10)]}, {"adapters": []}]},
            2,
            False,
        ),
        (
            {
                "adapters": [_state(20, 20)],
                "processes": [
                    {"running": True, "adapters": [_state(10, 10)]},
                    {"running": False, "adapters": [_state(10, 10)]},
                ],
            },
            2,
            False,
        ),
        (
            {
                "adapters": [_state(20, 20)],
                "processes": [
                    {"adapters": [_state(10, 10)]},
                    {"running": True, "adapters": [_state(10, 10)]},
                ],
            },
            2,
            True,
        ),
    ],
)
def test_runtime_ready_when_every_process_has_every_worker(
    document: dict[str, object] | None, processes: int, ready: bool
) -> None:
    assert runtime_ready(document, processes, 10, 10) is ready


def test_runtime_config_is_rendered_and_reads_back_with_the_given_settings(tmp_path: Path) -> None:
    context = BridgeContext(
        "nats://127.0.0.1:4222",
        "nats://127.0.0.1:4223",
        "BENCH_X",
        tmp_path,
        ("queue_len=40000", "stream.max_pending=1024", "ingest.workers=4"),
        stats_port=18223,
    )
    text = render_broker_config(runtime_data(context))
    assert "plugin.choria.adapter.bench.queue_len = 40000" in text
    context.config_path.write_text(text)
    settings = load_settings(context.config_path)
    adapter = settings.adapters["bench"]
    assert (adapter.queue_len, adapter.stream_max_pending, adapter.ingest_workers) == (40000, 1024, 4)
    assert (adapter.stream_name, adapter.stream_servers) == ("BENCH_X", ("nats://127.0.0.1:4223",))
    assert (settings.stats_port, settings.middleware_hosts) == (18223, ("nats://127.0.0.1:4222",))
    untouched = [row for row in adapter.describe() if row[2] == "default"]
    assert any(key.endswith(".stream.workers") for key, _, _ in untouched)  # defaults stay defaults


def _run_json(*arguments: str) -> dict[str, object]:
    result = subprocess.run(
        [str(REPO / "bench" / "run"), "--quick", "--json", *arguments],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report: dict[str, object] = json.loads(result.stdout)
    return report


def test_quick_benchmark_runs_every_bridge_and_ceiling_tiny_and_loses_nothing() -> None:
    report = _run_json("--messages", "300", "--paced-messages", "300")
    assert set(report["bridges"]) == set(BRIDGES)
    assert set(report["ceilings"]) == set(CEILINGS)
    rate = report["paced_rate"]
    assert isinstance(rate, float) and rate >= 10
    assert report["paced_rate_basis"].startswith("0.5 x fast1's capacity in repetition 1")
    for name, entry in report["bridges"].items():
        assert entry["available"], (name, entry)
        for key in BRIDGE_FIELDS:
            assert isinstance(entry[key], int | float), (name, key, entry)
        assert (entry["lost"], entry["duplicates"], entry["paced_rate"]) == (0, 0, rate), (name, entry)
        assert entry["processes"] == (2 if name.endswith("2") else 1), (name, entry)
    for name, entry in report["ceilings"].items():
        assert entry["available"], (name, entry)
        for key in CEILING_FIELDS:
            assert isinstance(entry[key], int | float), (name, key, entry)
        assert entry["lost"] == 0, (name, entry)
    for key in ("ratio_runtime1_fast1", "ratio_runtime2_fast2", "ratio_runtime1_naive"):
        assert isinstance(report[key], float) and report[key] > 0, key
    modes = report["runtime_publish"]["modes"]
    assert set(modes) == {"runtime1", "runtime2"}
    if report["runtime_publish"]["setting"] == "stream.publish = auto (default)":
        # the pinned nats-server supports fast-ingest and the bench stream allows it
        assert set(modes.values()) == {"batched"}, modes
    else:  # a runtime without the key publishes with per-message acks
        assert set(modes.values()) == {"acked"}, report["runtime_publish"]
    assert [target["target"] for target in report["targets"]] == [target[0] for target in TARGETS]
    assert all(target["met"] is not None for target in report["targets"]), report["targets"]


def test_a_fixed_rate_overrides_the_relative_one(tmp_path: Path) -> None:
    saved = tmp_path / "run.json"
    report = _run_json(
        *("--bridges", "fast1", "--ceilings", "none", "--rate", "500"),
        *("--messages", "200", "--paced-messages", "200", "--save", str(saved)),
    )
    assert json.loads(saved.read_text()) == report
    markdown = subprocess.run(
        [str(REPO / "bench" / "run"), "--from-json", str(saved), "--markdown"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    fast1_rows = [line for line in markdown.splitlines() if line.startswith("| fast1 | 1 | ")]
    assert (
        len(fast1_rows) == 1 and f"| {report['bridges']['fast1']['msgs_per_s']:,.0f} | 0 |" in fast1_rows[0]
    )
    assert "| runtime1 >= 1.2 x fast1 | - | not measured |" in markdown
    assert (report["paced_rate"], report["paced_rate_basis"]) == (500.0, "fixed with --rate")
    assert report["ceilings"] == {}
    fast1 = report["bridges"]["fast1"]
    assert (fast1["paced_rate"], fast1["lost"]) == (500.0, 0)
    assert report["ratio_runtime1_fast1"] is None


def _trial(rate: float, lost_paced: int, latencies: list[float], rss: list[float]) -> Trial:
    trial = Trial("fast2", "registration_1k", 0, processes=len(rss))
    trial.capacity_published = trial.capacity_stored = 1000
    trial.capacity_bytes = 1_000_000
    trial.capacity_seconds = 1000 / rate
    trial.paced_published, trial.paced_stored = 100, 100 - lost_paced
    trial.paced_latencies_ms = sorted(latencies)
    trial.cpu_s = 1000 / rate  # one core busy for the whole phase
    trial.rss_mb = rss
    return trial


def test_summary_takes_medians_but_the_worst_loss() -> None:
    summary = summarise(
        [
            _trial(10_000, 0, [1.0, 2.0], [30.0, 40.0]),
            _trial(30_000, 3, [5.0, 6.0], [31.0, 50.0]),
            _trial(20_000, 0, [3.0, 4.0], [35.0, 45.0]),
        ]
    )
    assert summary["msgs_per_s"] == 20_000
    assert summary["msgs_per_s_each"] == [10_000, 30_000, 20_000]  # repetitions in run order
    assert summary["mb_per_s"] == 20.0  # 1 MB stored in 1/20 s
    assert summary["p50_ms"] == 3.0
    assert summary["lost"] == 3 and summary["lost_paced"] == 3 and summary["lost_capacity"] == 0
    assert summary["cpu_s_per_10k"] == 0.5  # 10,000 messages at 20,000 msgs/s on one core
    assert (summary["steady_rss_mb_max_process"], summary["steady_rss_mb_total"]) == (45.0, 80.0)
    assert summary["processes"] == 2


def test_summary_of_failed_trials_is_unavailable_with_the_reason() -> None:
    failed = Trial("runtime1", "registration_1k", 0, error="bridge exited with status 78")
    assert summarise([failed]) == {"available": False, "reason": "bridge exited with status 78"}


def test_ratios_pair_each_runtime_with_its_like() -> None:
    bridges = {
        name: {"available": True, "msgs_per_s": rate}
        for name, rate in {"runtime1": 12_000, "runtime2": 22_000, "fast1": 10_000, "fast2": 20_000}.items()
    }
    bridges["naive"] = {"available": False, "reason": "failed"}
    assert ratios(bridges) == {
        "ratio_runtime1_fast1": 1.2,
        "ratio_runtime2_fast2": 1.1,
        "ratio_runtime1_naive": None,
    }


GOOD = {"p99_ms": 5.0, "lost_paced": 0, "steady_rss_mb_max_process": 48.0}
BAD = {"p99_ms": 25.0, "lost_paced": 2, "steady_rss_mb_max_process": 61.0}


@pytest.mark.parametrize(
    ("bridges", "ratio_values", "met"),
    [
        (
            {"runtime1": GOOD, "runtime2": GOOD},
            {"ratio_runtime1_fast1": 1.2, "ratio_runtime2_fast2": 1.1, "ratio_runtime1_naive": 6.0},
            [True] * 9,
        ),
        (
            {"runtime1": BAD, "runtime2": GOOD},
            {"ratio_runtime1_fast1": 1.19, "ratio_runtime2_fast2": 1.5, "ratio_runtime1_naive": 5.9},
            [False, True, False, False, True, False, True, False, True],
        ),
        (
            {},
            dict.fromkeys(("ratio_runtime1_fast1", "ratio_runtime2_fast2", "ratio_runtime1_naive")),
            [None] * 9,
        ),
    ],
)
def test_targets(
    bridges: dict[str, dict[str, float]], ratio_values: dict[str, float | None], met: list[bool | None]
) -> None:
    section = {"bridges": bridges, **ratio_values}
    assert [target["met"] for target in check_targets(section)] == met
