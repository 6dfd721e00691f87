"""The benchmark keeps working: its pure helpers, its input messages, and one tiny run.

No timing assertions: the figures depend on the machine; only shape and "nothing lost" are checked.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from bench import codec
from bench.harness import BRIDGES, RUNTIME_MODULE, Trial, check_targets, summarise
from bench.messages import INPUTS, load_template, make_request_id, parse_request_id, sender_name
from bench.stats import cpu_ticks_from_stat, percentile, status_kib, stored_time_ns

REPO = Path(__file__).resolve().parent.parent
BRIDGE_FIELDS = ("msgs_per_s", "mb_per_s", "lost", "p50_ms", "p99_ms", "peak_rss_mb", "cpu_s")


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


def test_quick_benchmark_runs_tiny_and_loses_nothing() -> None:
    result = subprocess.run(
        [str(REPO / "bench" / "run"), "--quick", "--json", "--messages", "300", "--paced-messages", "300"],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    assert set(report["inputs"]) == set(INPUTS)
    assert set(report["bridges"]) == set(BRIDGES)
    for section in [report, *report["inputs"].values()]:
        for name in ("naive", "fast"):
            entry = section["bridges"][name]
            assert entry["available"], entry
            for key in BRIDGE_FIELDS:
                assert isinstance(entry[key], int | float), (name, key, entry)
            assert entry["lost"] == 0, entry
            assert entry["duplicates"] == 0, entry
        runtime = section["bridges"]["runtime"]
        if RUNTIME_MODULE.exists():
            assert runtime["available"], runtime
            assert runtime["lost"] == 0, runtime
            assert all(isinstance(runtime[key], int | float) for key in BRIDGE_FIELDS), runtime
            assert section["ratio_runtime_fast"] > 0 and section["ratio_runtime_naive"] > 0
        else:
            assert not runtime["available"] and "not available" in runtime["reason"], runtime
            assert section["ratio_runtime_fast"] is None and section["ratio_runtime_naive"] is None


def _trial(rate: float, lost_paced: int, latencies: list[float]) -> Trial:
    trial = Trial("fast", "registration_1k", 0)
    trial.capacity_published = trial.capacity_stored = 1000
    trial.capacity_bytes = 1_000_000
    trial.capacity_seconds = 1000 / rate
    trial.paced_published, trial.paced_stored = 100, 100 - lost_paced
    trial.paced_latencies_ms = sorted(latencies)
    return trial


def test_summary_takes_medians_but_the_worst_loss() -> None:
    summary = summarise(
        [_trial(10_000, 0, [1.0, 2.0]), _trial(30_000, 3, [5.0, 6.0]), _trial(20_000, 0, [3.0, 4.0])]
    )
    assert summary["msgs_per_s"] == 20_000
    assert summary["mb_per_s"] == 20.0  # 1 MB stored in 1/20 s
    assert summary["p50_ms"] == 3.0
    assert summary["lost"] == 3 and summary["lost_paced"] == 3


def test_summary_of_failed_trials_is_unavailable_with_the_reason() -> None:
    failed = Trial("runtime", "registration_1k", 0, error="bridge exited with status 78")
    assert summarise([failed]) == {"available": False, "reason": "bridge exited with status 78"}


@pytest.mark.parametrize(
    ("runtime", "ratios", "met"),
    [
        (
            {"p99_ms": 5.0, "steady_rss_mb": 60.0, "lost_paced": 0},
            {"ratio_runtime_fast": 0.9, "ratio_runtime_naive": 7.0},
            [True, True, True, True, True],
        ),
        (
            {"p99_ms": 25.0, "steady_rss_mb": 120.0, "lost_paced": 2},
            {"ratio_runtime_fast": 0.5, "ratio_runtime_naive": 6.0},
            [False, True, False, False, False],
        ),
        ({}, {"ratio_runtime_fast": None, "ratio_runtime_naive": None}, [None] * 5),
    ],
)
def test_targets(runtime: dict[str, float], ratios: dict[str, float | None], met: list[bool | None]) -> None:
    section = {"bridges": {"runtime": runtime}, **ratios}
    assert [target["met"] for target in check_targets(section)] == met
