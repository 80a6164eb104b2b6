#!/usr/bin/env python3
"""warren against RabbitMQ: the scenario matrix.

Starts a warren (--shards 1) and a RabbitMQ node (one scheduler), both
pinned to CPU 0, runs loadgen pinned to CPU 1 against each broker in
turn (warren, rabbitmq, warren, rabbitmq, ...), and writes a markdown
report of medians, warren/RabbitMQ ratios and per-run values to
perf/results/<date>-<shorthash>.md. Python 3.11, standard library only.

    python3 perf/run.py [--runs N] [--duration S] [--soak S] [--only a,c-10k]
                        [--scale F] [--out FILE] [--without-watermark-flag]

Alternating runs, not one broker's block then the other's, so that noise
from whatever else the machine does (another engineer compiling) lands on
both sides alike; the ratios are what to read, the absolute rates less so.

Every report starts with the machine's floors: a plain blocking C echo over
loopback (perf/echo.c, server on CPU 0, client on CPU 1), measured at each
latency scenario's rate in the same run, and one fdatasync of a 1 KiB
append (perf/fsync.c) in the file system of warren's data directory, and
the durable echo (perf/echo.c again, fdatasyncing each read before it
echoes it, at the confirm-latency scenario's load); the latency scenarios
show their p50 and p99 as multiples of the echo, the confirm-latency
scenario as multiples of the fdatasync and of the durable echo. A case
that needs other broker settings
(warren --shards 2, a memory watermark) restarts the brokers with them,
and the next case that does not restarts them with the defaults again.
"""

from __future__ import annotations

import argparse
import base64
import ctypes
import datetime
import json
import os
import platform
import pwd
import re
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "perf" / "results"
WARREN_BIN = ROOT / "target" / "release" / "warren"
LOADGEN_BIN = ROOT / "target" / "release" / "loadgen"
ECHO_SOURCE = ROOT / "perf" / "echo.c"
ECHO_BIN = ROOT / "target" / "perf-echo"
FSYNC_SOURCE = ROOT / "perf" / "fsync.c"
FSYNC_BIN = ROOT / "target" / "perf-fsync"
# Appends (each followed by fdatasync) per run of the disk floor.
FSYNC_RECORDS = 1000
# The durable echo's load: p-10k's rate and message size.
DURABLE_ECHO_RATE = 10_000
DURABLE_ECHO_SIZE = 1024
WARREN_LOG = Path("/tmp/perf-warren.log")

BROKER_CPU = "0"
LOADGEN_CPU = "1"
WARREN_PORT = 5710
WARREN_MANAGEMENT_PORT = 15710
RABBITMQ_PORT = 5692
RABBITMQ_DIST_PORT = 25692
# Our own epmd, so that stopping it never touches another engineer's node.
RABBITMQ_EPMD_PORT = 4392
RABBITMQ_NODE = "perf@localhost"
RABBITMQ_BASE = Path("/tmp/perf-rmq")

PR_SET_CHILD_SUBREAPER = 36

DRAIN_S = 20
IDLE_CONNECTIONS = 1000
LATENCY_RATES = [1_000, 10_000, 50_000, 100_000]
PERCENTILES = ["p50", "p75", "p90", "p95", "p99", "p99.9", "p99.99"]
# The publish flood's memory high watermark, on both brokers, in bytes
# (plain bytes read the same in warren's flag and in rabbitmq.conf).
FLOOD_WATERMARK = 256 << 20
# How often the broker's RSS is read during a run that samples it.
RSS_SAMPLE_S = 0.25
# RSS "first" is read this long into publishing, when the connections and
# the first buffers are set up, so that growth means growth under load.
RSS_WARMUP_S = 1.0
# r-recovery's backlog (issue 8): 1M persistent 1 KiB messages, 1 GiB of bodies.
RECOVERY_MESSAGES = 1_000_000
# s-10m's backlog: 10M persistent 16-byte messages, published for at most
# this long (RabbitMQ fills far slower than warren: it gets what it can do).
TEN_MILLION = 10_000_000
BACKLOG_PUBLISH_CAP_S = 150
# warren's queue memory budget for the in-memory drain: above the backlog.
IN_MEMORY_BUDGET = "4GiB"
# Longest a clean stop, a recovery, a fill or a drain of a backlog may take.
BACKLOG_TIMEOUT_S = 900
# How often warren's management API is asked for a recovering queue's count.
RECOVERY_POLL_S = 0.05


# ---------------------------------------------------------------- scenarios


@dataclass
class Case:
    """One loadgen invocation, run N times against each broker."""

    name: str
    title: str
    args: list[str]
    doc: str = ""
    note: str = ""
    # Latency scenarios keep an .hgrm per broker and plot them side by side,
    # and compare their percentiles with the floor at `rate`.
    hgrm: bool = False
    rate: int | None = None
    # Memory scenarios start each broker afresh and read its RSS mid-run.
    measure_rss: bool = False
    # Read the broker's RSS all through the run: first, last, max.
    sample_rss: bool = False
    # Start each broker afresh for every run.
    fresh: bool = False
    # Broker settings beyond the defaults: warren's extra flags, lines of
    # rabbitmq.conf. A change restarts the broker.
    warren_flags: tuple[str, ...] = ()
    rabbitmq_conf: tuple[str, ...] = ()
    # Memory high watermark in bytes, to compare the RSS with.
    watermark: int | None = None
    # warren --shards 2: put the queue on shard 1 and the connections on 0.
    cross_shard: bool = False
    # Compare the confirm latency with the disk floors (fdatasync, the
    # durable echo).
    disk_floor: bool = False
    drain_s: float = DRAIN_S
    like_for_like: bool = True
    # Report the publish rate second by second (loadgen's intervals).
    rate_over_time: bool = False
    # A run that is more than one loadgen invocation: called instead of
    # run_once, with the same arguments.
    procedure: "Callable[..., Run] | None" = None
    # Messages in the backlog the case builds (r, s): r's fill, s's target.
    messages: int = 0


@dataclass
class Options:
    """What the scenarios are built from: the command line's durations,
    whether this warren takes --memory-high-watermark, and the backlog
    scale."""

    duration: float
    soak: float
    watermark_flag: bool = True
    # Multiplies the backlogs of r-recovery and s-10m (a quick look: 0.01).
    scale: float = 1.0


def scenario_a(o: Options) -> list[Case]:
    """1 producer -> 1 queue -> 1 consumer, no confirms, auto-ack: the raw
    publish/deliver path, with the smallest body loadgen can stamp (16 B)
    and a 1 KB one."""
    return [
        Case(f"a-{label}", f"1 -> 1 -> 1, {label} bodies, no confirms, auto-ack",
             ["-x", "1", "-y", "1", "-s", str(size), "-a", "-z", str(o.duration)])
        for label, size in [("16B", 16), ("1KB", 1024)]
    ]


def scenario_b(o: Options) -> list[Case]:
    """100 B persistent messages to a durable queue, confirm window 3000,
    manual acks: the 'reliable messaging' configuration."""
    return [Case(
        "b", "100 B persistent, durable queue, confirms (window 3000), manual ack",
        ["-x", "1", "-y", "1", "-s", "100", "-f", "-c", "3000", "-z", str(o.duration)],
        note="**Not like-for-like:** warren does not persist yet. It keeps "
             "durable queues in memory and confirms at once, while RabbitMQ "
             "writes persistent messages to its message store before "
             "confirming. Read this ratio as an upper bound, not a result.",
        like_for_like=False,
    )]


def scenario_c(o: Options) -> list[Case]:
    """End-to-end latency at fixed rates (1k, 10k, 50k, 100k msg/s),
    1 -> 1 -> 1, 16 B, auto-ack. Latency is measured from each message's
    scheduled send time, so a broker that falls behind the rate shows it as
    latency rather than hiding it (no coordinated omission). p50 and p99
    are also given as multiples of the floor (the C echo) at the same rate,
    measured in the same run; the target is at most 2x."""
    return [
        Case(f"c-{rate // 1000}k", f"latency at {rate // 1000}k msg/s, 1 -> 1 -> 1, 16 B, auto-ack",
             ["-x", "1", "-y", "1", "-s", "16", "-a", "-r", str(rate), "-z", str(o.duration)],
             hgrm=True, rate=rate)
        for rate in LATENCY_RATES
    ]


def scenario_d(o: Options) -> list[Case]:
    """5 producers -> 5 queues -> 5 consumers (producer i and consumer i on
    queue i), 100 B, no confirms, auto-ack."""
    return [Case("d", "5 producers, 5 queues, 5 consumers, 100 B, auto-ack",
                 ["-x", "5", "-y", "5", "--queues", "5", "-s", "100", "-a",
                  "-z", str(o.duration)])]


def scenario_e(o: Options) -> list[Case]:
    """Fanout: 1 producer into a fanout exchange bound to 10 queues, one
    consumer each, 100 B, auto-ack. Received rate counts every copy."""
    return [Case("e", "fanout to 10 queues, 1 consumer each, 100 B, auto-ack",
                 ["-t", "fanout", "-x", "1", "-y", "10", "--queues", "10",
                  "-s", "100", "-a", "-z", str(o.duration)])]


def scenario_f(o: Options) -> list[Case]:
    """Topic exchange with 10k bindings: one real binding
    (orders.eu.created) among 10,000 random ones that match nothing,
    1 -> 1 -> 1, 100 B, auto-ack. Measures the routing cost of a big table."""
    return [Case("f", "topic exchange, 10k bindings, 1 -> 1 -> 1, 100 B, auto-ack",
                 ["-t", "topic", "-k", "orders.eu.created", "--bindings", "10000",
                  "-x", "1", "-y", "1", "-s", "100", "-a", "-z", str(o.duration)])]


def scenario_g(o: Options) -> list[Case]:
    """1000 idle connections: each broker starts afresh, loadgen opens 1000
    connections that stay idle beside a 100 msg/s trickle, and the broker's
    RSS (VmRSS; beam.smp for RabbitMQ) is read once they are all open."""
    return [Case("g", f"{IDLE_CONNECTIONS} idle connections, broker RSS",
                 ["--idle-connections", str(IDLE_CONNECTIONS), "-x", "1", "-y", "1",
                  "-r", "100", "-a", "-z", str(max(o.duration, 5.0))],
                 measure_rss=True)]


def scenario_h(o: Options) -> list[Case]:
    """Manual acks under an unlimited publisher, one shard, 16 B (issue 6):
    h-p100 is 1 -> 1 -> 1 with prefetch 100 and one ack per message, for
    --soak seconds (30 by default); h-p1000 the same with prefetch 1000 and
    a multiple-ack every 100; h-2x2 two producers and two consumers on one
    queue (prefetch 100, one ack each); h-shards2 is h-p100 on warren
    --shards 2 with the queue on the other shard from both connections.
    The consumer rate is taken while the publisher runs (before the drain
    empties what the queue kept); publisher/consumer is the ratio of the
    two rates (targets: consumer at least 300k msg/s on warren, publisher
    within 10% of it). The broker's RSS is read every 0.25 s: first (1 s
    into publishing), last (end of publishing), max (whole run)."""
    base = ["-s", "16", "-q", "100"]
    cases = [
        Case("h-p100", "manual acks, prefetch 100, ack each, 1 -> 1 -> 1, unlimited publisher",
             ["-x", "1", "-y", "1", *base, "-z", str(o.soak)]),
        Case("h-p1000", "manual acks, prefetch 1000, multiple-ack every 100, 1 -> 1 -> 1",
             ["-x", "1", "-y", "1", "-s", "16", "-q", "1000", "-A", "100",
              "-z", str(o.duration)]),
        Case("h-2x2", "manual acks, prefetch 100, 2 producers -> 1 queue -> 2 consumers",
             ["-x", "2", "-y", "2", *base, "-z", str(o.duration)]),
        Case("h-shards2", "manual acks, prefetch 100, 1 -> 1 -> 1, warren --shards 2, "
                          "queue on the other shard",
             ["-x", "1", "-y", "1", *base, "-z", str(o.duration)],
             # The connection log names the shard that accepted each peer.
             warren_flags=("--shards", "2", "--log", "info,warren::connection=debug"),
             cross_shard=True,
             note="warren runs `--shards 2` (both shards on CPU 0). The queue's name is "
                  "chosen so that `catalog::queue_shard` puts it on shard 1, and the "
                  "producer and consumer connect from local ports that a probe just "
                  "before the run saw the kernel's SO_REUSEPORT hash hand to shard 0; "
                  "the placement column says where warren's log shows they landed. "
                  "RabbitMQ has no shards: its row is the same node as h-p100, for scale."),
    ]
    for case in cases:
        case.sample_rss = True
        # What a publisher got ahead by must drain, or it counts as lost.
        case.drain_s = 60
    return cases


def scenario_i(o: Options) -> list[Case]:
    """Publish flood with no consumer: the memory high watermark set to
    256 MiB on both brokers (warren --memory-high-watermark,
    RabbitMQ vm_memory_high_watermark.absolute), each broker started afresh
    per run. One unlimited publisher sends 1 KB messages with no consumer
    for 2 x --duration seconds; then a consumer (prefetch 1000, a
    multiple-ack every 100) subscribes while the publisher goes on for
    --duration more, and drains the queue. Reported: the broker's RSS max
    against the watermark, connection.blocked and connection.unblocked
    seen by the publisher and the time it spent blocked, and the loss
    check over every message."""
    publish_s, delay_s = 3 * o.duration, 2 * o.duration
    warren_flags = (("--memory-high-watermark", str(FLOOD_WATERMARK))
                    if o.watermark_flag else ())
    note = ("" if o.watermark_flag else
            "**warren ran without a watermark** (`--without-watermark-flag`: "
            "this warren predates `--memory-high-watermark`).")
    return [Case(
        "i", "publish flood, no consumer at first, watermark 256 MiB, 1 KB, then a consumer drains",
        ["-x", "1", "-y", "1", "-s", "1024", "-q", "1000", "-A", "100",
         "--consumer-delay", str(delay_s), "-z", str(publish_s)],
        sample_rss=True, fresh=True, warren_flags=warren_flags,
        rabbitmq_conf=(f"vm_memory_high_watermark.absolute = {FLOOD_WATERMARK}",),
        watermark=FLOOD_WATERMARK, drain_s=120, note=note)]


def scenario_p(o: Options) -> list[Case]:
    """Persistent 1 KiB messages with publisher confirms into a durable
    queue (issue 8): 4 producers with a window of 256 each and one consumer
    (prefetch 1000, a multiple-ack every 100). p-classic is RabbitMQ's
    classic durable queue, p-quorum its quorum queue (warren declares the
    same x-queue-type). p-10k is one producer at 10k msg/s: the confirm
    latency, with p50 and p99 as multiples of the fdatasync floor (targets
    2x and 4x) and of the durable echo (an echo server that fdatasyncs
    each read before echoing it, at the same rate and size)."""
    base = ["-s", "1024", "-f", "-c", "256", "-y", "1", "-q", "1000", "-A", "100"]
    return [
        Case("p-classic", "persistent 1 KiB, confirms (4 x 256), durable classic queue",
             ["-x", "4", *base, "-z", str(o.duration)]),
        Case("p-quorum", "persistent 1 KiB, confirms (4 x 256), quorum queue",
             ["-x", "4", *base, "--queue-type", "quorum", "-z", str(o.duration)]),
        Case("p-10k", "confirm latency at 10k msg/s, persistent 1 KiB, durable queue",
             ["-x", "1", *base, "-r", "10000", "-z", str(o.duration)], disk_floor=True),
    ]


def scenario_q(o: Options) -> list[Case]:
    """A persistent backlog larger than warren's queue memory budget
    (issue 8): 4 producers send persistent 1 KiB messages with confirms
    (a window of 256 each) into a durable queue for 3 x --duration seconds
    with no consumer; then a consumer (prefetch 1000, a multiple-ack every
    100) drains the queue. warren runs with --queue-memory-budget 64MiB, so
    all but 64 MiB of bodies are paged to the message log; RabbitMQ 3.10's
    classic queue pages by its own rules. Each broker starts afresh per
    run. Reported: publish rate (sent/s), RSS max while the backlog fills,
    and the drain rate (received/s over the consumer's time)."""
    publish_s = 3 * o.duration
    return [Case(
        "q-backlog", "persistent 1 KiB backlog past the queue memory budget (64 MiB), "
                     "confirms 4 x 256, then drained",
        ["-x", "4", "-y", "1", "-s", "1024", "-f", "-c", "256", "-q", "1000", "-A", "100",
         "--consumer-delay", str(publish_s), "-z", str(publish_s)],
        sample_rss=True, fresh=True, warren_flags=("--queue-memory-budget", "64MiB"),
        drain_s=180)]


def scenario_r(o: Options) -> list[Case]:
    """A 1 GiB backlog and a clean restart (issue 8). Each broker starts
    afresh with its defaults (warren: no --queue-memory-budget). 4 producers
    publish 1M persistent 1 KiB messages (--scale scales the count) with
    confirms (a window of 256 each) into a durable queue with no consumer
    (loadgen -C, -y 0); the broker's RSS is read every 0.25 s meanwhile.
    Then a clean stop (warren: SIGTERM, and wait for it to exit; RabbitMQ:
    rabbitmqctl stop) and a start on the same data directory. Recovery is
    the time from the broker's exec until the first answer that shows the
    queue holding every confirmed message, asked once the AMQP port is
    open: warren's management API (GET /api/queues/%2F/NAME, every 50 ms),
    RabbitMQ's `rabbitmqctl list_queues name messages` (perf runs no
    management plugin), pinned to loadgen's CPU and asked again as soon as
    it answers; each call takes about a second, so RabbitMQ's figure is up
    to that late. "ready after restart" is the time until the port is
    open (warren) or `rabbitmqctl await_startup` answers (RabbitMQ). Then one consumer (prefetch 1000, a multiple-ack every
    100, loadgen -x 0) drains the queue: drain rate, and lost = confirmed
    before the stop less drained after. Then the in-memory drain: the
    broker afresh (warren --queue-memory-budget 4GiB; RabbitMQ's defaults
    keep 1 GiB in memory on this machine), the same backlog of transient
    messages in a non-durable queue, drained the same way. Targets (warren):
    RSS max under 200 MiB while filling, recovery at most 5 s, drain at
    least half the in-memory drain."""
    n = max(4, int(RECOVERY_MESSAGES * o.scale))
    return [Case(
        "r-recovery", f"{n:,} x 1 KiB persistent backlog: RSS, clean restart, drain "
                      "against an in-memory drain",
        backlog_args("QUEUE", n, 1024, persistent=True),
        procedure=run_recovery, messages=n, fresh=True)]


def scenario_s(o: Options) -> list[Case]:
    """A backlog of 10M persistent 16-byte messages (issue 8), --scale
    scales the count: each broker afresh with its defaults, 4 producers
    with confirms (a window of 256 each) into a durable queue with no
    consumer, until the count is reached or for at most 150 s (RabbitMQ
    does not reach 10M in that time: its row is the backlog it reached, so
    read its RSS per message, not per run). RSS read every 0.25 s. Target
    (warren): RSS max under 400 MiB. Nothing is drained."""
    n = max(4, int(TEN_MILLION * o.scale))
    queue = f"perf-s-{os.getpid()}"
    args = backlog_args(queue, n, 16, persistent=True)
    args[args.index("-z") + 1] = str(BACKLOG_PUBLISH_CAP_S)
    return [Case("s-10m", f"{n:,} x 16 B persistent backlog, confirms 4 x 256, no consumer",
                 args, sample_rss=True, fresh=True, messages=n)]


def scenario_t(o: Options) -> list[Case]:
    """A transient flood past the queue memory budget (issue 8): each
    broker afresh with its defaults except the memory high watermark,
    256 MiB on both (warren's queue memory budget is then half of it,
    128 MiB). One unlimited publisher sends 1 KB transient messages with
    no consumer for 4 x --duration seconds; then a consumer (prefetch 1000,
    a multiple-ack every 100) drains the queue. warren should page what is
    past the budget to disk and go on publishing at disk speed rather than
    stop at the watermark. Reported: the publish rate second by second
    (min over the publishing seconds, the mean of its last third, seconds
    with nothing sent), connection.blocked and the time blocked, RSS max
    against the watermark, and loadgen's loss check over every message
    (drained = published)."""
    publish_s = 4 * o.duration
    flood = scenario_i(o)[0]
    return [Case(
        "t-flood", "transient flood past the memory budget, no consumer, watermark 256 MiB, "
                   "1 KB, then drained",
        ["-x", "1", "-y", "1", "-s", "1024", "-q", "1000", "-A", "100",
         "--consumer-delay", str(publish_s), "-z", str(publish_s)],
        sample_rss=True, fresh=True, warren_flags=flood.warren_flags,
        rabbitmq_conf=flood.rabbitmq_conf, watermark=FLOOD_WATERMARK, drain_s=300,
        note=flood.note, rate_over_time=True)]


def backlog_args(queue: str, messages: int, size: int, persistent: bool) -> list[str]:
    """loadgen filling `queue` with `messages` (4 producers, confirms 4 x
    256) and no consumer."""
    return ["-x", "4", "-y", "0", "-u", queue, "-s", str(size), "-c", "256",
            *(["-f"] if persistent else []), "-C", str(messages // 4), "-z", "0"]


SCENARIOS = [scenario_a, scenario_b, scenario_c, scenario_d, scenario_e,
             scenario_f, scenario_g, scenario_h, scenario_i, scenario_p, scenario_q,
             scenario_r, scenario_s, scenario_t]


def all_cases(options: Options, only: str | None) -> list[Case]:
    """Every case, or those named by --only (a scenario letter or a case
    name, comma-separated)."""
    cases = []
    for scenario in SCENARIOS:
        for case in scenario(options):
            case.doc = " ".join(scenario.__doc__.split())
            cases.append(case)
    if not only:
        return cases
    wanted = set(only.split(","))
    chosen = [c for c in cases if c.name in wanted or c.name.split("-")[0] in wanted]
    if not chosen:
        sys.exit(f"--only {only}: no such scenario (have {', '.join(c.name for c in cases)})")
    return chosen


# ------------------------------------------------------------------ brokers


def pinned(cpu: str, command: list[str]) -> list[str]:
    return ["taskset", "-c", cpu, *command]


def wait_for_port(port: int, timeout_s: float, process: subprocess.Popen | None = None) -> None:
    """Until something listens on `port`; an error if `process` exits first."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if established_or_listening(port, listening=True):
            return
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"pid {process.pid} exited with {process.returncode} before "
                               f"listening on port {port}")
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on port {port} after {timeout_s} s")


def tcp_sockets(port: int) -> list[str]:
    """States (hex, as in /proc/net/tcp) of the sockets whose local port is `port`."""
    states = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port:
                states.append(fields[3])
    return states


def established_or_listening(port: int, listening: bool = False) -> int:
    wanted = "0A" if listening else "01"
    return sum(1 for state in tcp_sockets(port) if state == wanted)


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def kill_pid(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


class Warren:
    name = "warren"

    def __init__(self) -> None:
        self.port = WARREN_PORT
        self.uri = f"amqp://guest:guest@127.0.0.1:{self.port}/%2f"
        # Flags beyond the defaults, as name/value pairs (see Case.warren_flags).
        self.settings: tuple[str, ...] = ()
        self.process: subprocess.Popen | None = None
        self.log = open(WARREN_LOG, "ab")
        # Every start gets an empty data directory (what one case made
        # durable must not come back in the next), unless a restart keeps it.
        self.data_dir: Path | None = None
        # time.monotonic() when the last start exec'd warren.
        self.started_at = 0.0

    @property
    def command(self) -> list[str]:
        flags = {"--bind": "127.0.0.1", "--port": str(self.port), "--shards": "1",
                 "--management-port": str(WARREN_MANAGEMENT_PORT),
                 "--data-dir": str(self.data_dir or "DIR")}
        flags.update(zip(self.settings[::2], self.settings[1::2]))
        return pinned(BROKER_CPU, [str(WARREN_BIN), *(x for kv in flags.items() for x in kv)])

    def case_settings(self, case: "Case") -> tuple[str, ...]:
        return case.warren_flags

    def start(self) -> None:
        # SO_REUSEPORT would let a stray warren on our port share the
        # connections with ours, silently. Our own last warren's listeners
        # may outlive it a moment: io_uring releases their files after exit.
        deadline = time.monotonic() + 10
        while established_or_listening(self.port, listening=True):
            if time.monotonic() > deadline:
                raise RuntimeError(f"something already listens on port {self.port}")
            time.sleep(0.1)
        if self.data_dir is None:
            self.data_dir = Path(tempfile.mkdtemp(prefix="perf-warren-"))
        self.started_at = time.monotonic()
        # taskset execs warren, so the child's pid is warren's.
        self.process = subprocess.Popen(self.command, stdout=self.log, stderr=self.log)
        # A restart on a big backlog may recover it before it listens.
        wait_for_port(self.port, BACKLOG_TIMEOUT_S, self.process)

    def restart(self) -> float:
        """A clean stop (SIGTERM, and wait for the exit) and a start on the
        same data directory; returns the seconds the stop took."""
        stopping = time.monotonic()
        self.stop(keep_data=True, timeout_s=BACKLOG_TIMEOUT_S)
        stopped = time.monotonic() - stopping
        self.start()
        return stopped

    def queue_messages(self, queue: str) -> int | None:
        """The queue's message count from the management API; None while
        the API does not answer or does not know the queue."""
        url = f"http://127.0.0.1:{WARREN_MANAGEMENT_PORT}/api/queues/%2F/{queue}"
        request = urllib.request.Request(url, headers={
            "Authorization": "Basic " + base64.b64encode(b"guest:guest").decode()})
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return json.load(response).get("messages")
        except (OSError, ValueError):
            return None

    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def stop(self, keep_data: bool = False, timeout_s: float = 10) -> None:
        if self.process is None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            print(f"warren did not exit {timeout_s:g} s after SIGTERM; killing it",
                  file=sys.stderr)
            self.process.kill()
            self.process.wait()
        self.process = None
        if self.data_dir and not keep_data:
            shutil.rmtree(self.data_dir, ignore_errors=True)
            self.data_dir = None


class RabbitMQ:
    name = "rabbitmq"

    def __init__(self) -> None:
        self.port = RABBITMQ_PORT
        self.uri = f"amqp://guest:guest@127.0.0.1:{self.port}/%2f"
        self.user = "rabbitmq" if os.geteuid() == 0 else None
        self.env = self.environment()
        self.command = pinned(BROKER_CPU, ["/usr/lib/rabbitmq/bin/rabbitmq-server"])
        # Lines of rabbitmq.conf (see Case.rabbitmq_conf); none by default.
        self.settings: tuple[str, ...] = ()
        self.process: subprocess.Popen | None = None
        # time.monotonic() when the last start exec'd rabbitmq-server.
        self.started_at = 0.0

    def case_settings(self, case: "Case") -> tuple[str, ...]:
        return case.rabbitmq_conf

    def environment(self) -> dict[str, str]:
        """Our node's own name, ports, directories, epmd and empty config, so
        nothing is shared with another node on this machine."""
        base = RABBITMQ_BASE
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(base / "home"),
            "LANG": "C.UTF-8",
            "RABBITMQ_NODENAME": RABBITMQ_NODE,
            "RABBITMQ_NODE_PORT": str(RABBITMQ_PORT),
            "RABBITMQ_DIST_PORT": str(RABBITMQ_DIST_PORT),
            "ERL_EPMD_PORT": str(RABBITMQ_EPMD_PORT),
            "RABBITMQ_MNESIA_BASE": str(base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(base / "log"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(base / "plugins"),
            "RABBITMQ_CONFIG_FILE": str(base / "rabbitmq"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(base / "advanced.config"),
            "RABBITMQ_CONF_ENV_FILE": str(base / "rabbitmq-env.conf"),
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "+S 1:1",
        }

    def prepare_dirs(self) -> None:
        base = RABBITMQ_BASE
        shutil.rmtree(base, ignore_errors=True)
        for sub in ("home", "mnesia", "log"):
            (base / sub).mkdir(parents=True, exist_ok=True)
        (base / "plugins").write_text("[].\n")
        (base / "rabbitmq-env.conf").write_text("")
        (base / "rabbitmq.conf").write_text("".join(f"{line}\n" for line in self.settings))
        if self.user:
            account = pwd.getpwnam(self.user)
            for path in [base, *base.rglob("*")]:
                os.chown(path, account.pw_uid, account.pw_gid)

    def start(self, keep_data: bool = False) -> None:
        if not keep_data:
            self.prepare_dirs()
        self.started_at = time.monotonic()
        self.process = subprocess.Popen(
            self.command, env=self.env, user=self.user, cwd=RABBITMQ_BASE,
            stdout=subprocess.DEVNULL, stderr=open(RABBITMQ_BASE / "log" / "stderr", "ab"))
        # await_startup fails at once while the node is not yet registered
        # with epmd, so try again until it answers.
        deadline = time.monotonic() + 120
        while True:
            try:
                self.ctl(["await_startup"], timeout=120, quiet=True)
                return
            except subprocess.CalledProcessError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise
                time.sleep(1)

    def restart(self) -> float:
        """A clean stop (rabbitmqctl stop) and a start on the same
        directories; returns the seconds the stop took."""
        stopping = time.monotonic()
        self.stop()
        stopped = time.monotonic() - stopping
        self.start(keep_data=True)
        return stopped

    def queue_messages(self, queue: str) -> int | None:
        """The queue's message count from `rabbitmqctl list_queues`; None
        while the node does not answer or does not list the queue."""
        try:
            listing = self.ctl(["list_queues", "name", "messages", "--quiet",
                                "--no-table-headers"], timeout=BACKLOG_TIMEOUT_S, quiet=True)
        except (subprocess.SubprocessError, OSError):
            return None
        counts = dict(line.split("\t", 1) for line in listing.splitlines() if "\t" in line)
        return int(counts[queue]) if counts.get(queue, "").strip().isdigit() else None

    def ctl(self, args: list[str], timeout: float = 60, quiet: bool = False) -> str:
        """rabbitmqctl on loadgen's CPU (the broker's is measured); its output."""
        return subprocess.run(
            pinned(LOADGEN_CPU, ["/usr/lib/rabbitmq/bin/rabbitmqctl", "-n", RABBITMQ_NODE, *args]),
            env=self.env, user=self.user, cwd=RABBITMQ_BASE, check=True, text=True,
            timeout=timeout, stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL if quiet else None).stdout

    def pid(self) -> int:
        """The beam.smp of our node (the Popen child is a shell script)."""
        pids = self.beams()
        if not pids:
            raise RuntimeError(f"no beam.smp for {RABBITMQ_NODE}")
        return pids[0]

    def beams(self) -> list[int]:
        """Our node's beam.smp: its command line names our HOME (the node
        name travels in the environment, not the command line)."""
        return processes_matching("beam.smp", f"-home {self.env['HOME']} ")

    def stop(self) -> None:
        if self.process is None:
            return
        beams = self.beams()
        try:
            # A node with a big backlog writes its queue indices on the way down.
            self.ctl(["stop"], timeout=300)
        except (subprocess.SubprocessError, OSError) as error:
            print(f"rabbitmqctl stop failed ({error}); killing by pid", file=sys.stderr)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        for pid in beams + epmd_pids(RABBITMQ_EPMD_PORT):
            kill_pid(pid)
        self.process = None


def processes_matching(comm: str, in_cmdline: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "comm").read_text().strip() != comm:
                continue
            cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if in_cmdline in cmdline or in_cmdline in cmdline.replace("\0", " "):
            pids.append(int(entry.name))
    return pids


def epmd_pids(port: int) -> list[int]:
    """The epmd that our node started: the one whose environment names our port."""
    pids = []
    for pid in processes_matching("epmd", ""):
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"ERL_EPMD_PORT={port}".encode() in environ:
            pids.append(pid)
    return pids


def configure(broker, settings: tuple[str, ...], fresh: bool) -> None:
    """Restarts `broker` with `settings` if it runs with others (or not at
    all), or if the case wants a fresh broker."""
    if fresh or settings != broker.settings or broker.process is None:
        broker.stop()
        broker.settings = settings
        broker.start()


# ------------------------------------------------------------------ floor


def build_floor_tool(source: Path, binary: Path) -> None:
    """Compiles a floor's C source with the system gcc, when the binary is older."""
    if binary.exists() and binary.stat().st_mtime >= source.stat().st_mtime:
        return
    binary.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["gcc", "-O2", "-Wall", "-pthread", "-o", str(binary), str(source)],
                   check=True)


def fdatasync_once() -> dict:
    """fdatasync of a 1 KiB append, FSYNC_RECORDS times, in the file system
    that warren's data directories are made in, pinned to the brokers' CPU:
    the tool's JSON, or {} if it failed."""
    try:
        done = subprocess.run(
            pinned(BROKER_CPU, [str(FSYNC_BIN), tempfile.gettempdir(), str(FSYNC_RECORDS)]),
            capture_output=True, text=True, timeout=300)
        return json.loads(done.stdout) if done.returncode == 0 else {}
    except (subprocess.TimeoutExpired, json.JSONDecodeError):
        return {}


@dataclass
class DiskFloors:
    """The disk floors, measured again before each run index of a case that
    compares with them, so that every run is read against the floors of its
    own minutes (the disk and the loopback's tail change by the hour)."""
    duration: float
    fdatasync: list[dict] = field(default_factory=list)
    durable_echo: list[dict] = field(default_factory=list)

    def measure(self) -> dict[str, dict[str, float]]:
        """One fdatasync run and one durable echo: their percentiles."""
        index = len(self.fdatasync) + 1
        sync = fdatasync_once()
        print(f"  fdatasync run {index}: p50 {sync.get('p50', '-')} us "
              f"p99 {sync.get('p99', '-')} us", flush=True)
        echo = echo_once(DURABLE_ECHO_RATE, self.duration, durable=True, size=DURABLE_ECHO_SIZE)
        latency = echo.get("latency_us", {})
        print(f"  durable echo run {index}: p50 {latency.get('p50', '-')} us "
              f"p99 {latency.get('p99', '-')} us", flush=True)
        self.fdatasync.append(sync)
        self.durable_echo.append(echo)
        return {"fdatasync": sync, "durable echo": latency}


def echo_once(rate: int, duration: float, durable: bool = False, size: int = 16) -> dict:
    """One floor measurement: the echo server on the broker's CPU, the
    client on loadgen's; the client's JSON, or {} if it failed. A durable
    echo fdatasyncs each read in the directory that warren's data
    directories are made in before it echoes it."""
    log_dir = [tempfile.gettempdir()] if durable else []
    server = subprocess.Popen(pinned(BROKER_CPU, [str(ECHO_BIN), "server", *log_dir]),
                              stdout=subprocess.PIPE, text=True)
    try:
        port = server.stdout.readline().strip()
        client = subprocess.run(
            pinned(LOADGEN_CPU, [str(ECHO_BIN), "client", port, str(rate), str(duration),
                                 str(size)]),
            capture_output=True, text=True, timeout=duration + 30)
        return json.loads(client.stdout) if client.returncode == 0 else {}
    except (subprocess.TimeoutExpired, json.JSONDecodeError):
        return {}
    finally:
        kill_pid(server.pid)
        server.wait()


def measure_floor(runs: int, duration: float) -> dict[int, list[dict]]:
    """The echo at every latency rate, `runs` times each, rates alternating."""
    floor: dict[int, list[dict]] = {rate: [] for rate in LATENCY_RATES}
    for index in range(1, runs + 1):
        for rate in LATENCY_RATES:
            result = echo_once(rate, duration)
            latency = result.get("latency_us", {})
            print(f"  floor-{rate // 1000}k run {index}: p50 {latency.get('p50', '-')} us "
                  f"p99 {latency.get('p99', '-')} us", flush=True)
            floor[rate].append(result)
    return floor


def floor_medians(results: list[dict]) -> dict[str, float]:
    """Median of each percentile over the floor runs at one rate."""
    by_label: dict[str, list[float]] = {}
    for result in results:
        for label, value in result.get("latency_us", {}).items():
            by_label.setdefault(label, []).append(value)
    return {label: statistics.median(values) for label, values in by_label.items()}


# ------------------------------------------------------------------- runs


class RssSampler(threading.Thread):
    """Reads a process's RSS every RSS_SAMPLE_S until stopped, as (seconds
    since start, KiB) pairs."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.samples: list[tuple[float, int]] = []
        self.done = threading.Event()

    def run(self) -> None:
        start = time.monotonic()
        while not self.done.is_set():
            try:
                self.samples.append((time.monotonic() - start, rss_kb(self.pid)))
            except (OSError, RuntimeError):
                return
            self.done.wait(RSS_SAMPLE_S)

    def stop(self) -> list[tuple[float, int]]:
        self.done.set()
        self.join()
        return self.samples


@dataclass
class Run:
    broker: str
    index: int
    exit_code: int
    summary: dict
    stderr: str = ""
    rss_before_kb: int | None = None
    rss_kb: int | None = None
    rss_samples: list[tuple[float, int]] = field(default_factory=list)
    # The floor's median percentiles at this case's rate, if it has one.
    floor: dict[str, float] | None = None
    # The disk floors' percentiles by floor (fdatasync, durable echo),
    # measured just before this run, for a disk_floor case.
    disk_floor: dict[str, dict[str, float]] | None = None
    watermark: int | None = None
    placement: str = ""
    # Figures a procedure measured beyond loadgen's summary.
    extra: dict[str, float] = field(default_factory=dict)
    # Publish rate second by second: report it (Case.rate_over_time).
    rate_over_time: bool = False

    def figures(self) -> dict[str, float]:
        """The figures this run contributes to the medians."""
        s = self.summary
        values = {
            "sent/s": s.get("sent_per_s"),
            "received/s": s.get("received_per_s"),
            "confirmed/s": s.get("confirmed_per_s") if s.get("confirmed") else None,
        }
        latency = s.get("latency_us", {})
        for p in PERCENTILES:
            values[f"latency {p} us"] = latency.get(p)
        if self.floor:
            for p in ("p50", "p99"):
                if latency.get(p) is not None and self.floor.get(p):
                    values[f"latency {p} / floor"] = latency[p] / self.floor[p]
        confirm = s.get("confirm_latency_us", {})
        for p in ("p50", "p99"):
            values[f"confirm {p} us"] = confirm.get(p)
            for name, floor in (self.disk_floor or {}).items():
                if confirm.get(p) is not None and floor.get(p):
                    values[f"confirm {p} / {name}"] = confirm[p] / floor[p]
        if self.rss_kb is not None:
            values["RSS idle MiB"] = self.rss_before_kb / 1024
            values["RSS MiB"] = self.rss_kb / 1024
            values["RSS growth KiB/conn"] = (self.rss_kb - self.rss_before_kb) / IDLE_CONNECTIONS
        if self.rss_samples:
            values.update(self.flow_figures())
        if self.rate_over_time:
            values.update(self.publish_rate_figures())
        values.update(self.extra)
        return {k: float(v) for k, v in values.items() if v is not None}

    def publishing_rates(self) -> list[float]:
        """sent/s in each of loadgen's intervals (about 1 s) that ended
        while publishing."""
        publishing_s = self.summary.get("publish_time_s", 0.0)
        return [i["sent"] / i["length_s"] for i in self.summary.get("intervals", [])
                if i["end_s"] <= publishing_s + 0.1 and i["length_s"] > 0]

    def publish_rate_figures(self) -> dict[str, float | None]:
        rates = self.publishing_rates()
        last = rates[len(rates) * 2 // 3:]
        return {
            "publish msg/s min (1 s)": min(rates) if rates else None,
            "publish msg/s last third": statistics.mean(last) if last else None,
            "seconds with nothing sent": sum(1 for rate in rates if rate == 0),
        }

    def flow_figures(self) -> dict[str, float | None]:
        """Rates while publishing, RSS over the run, blocking: the figures of
        the runs that sample RSS (scenarios h and i)."""
        s = self.summary
        consumer = s.get("received_while_publishing_per_s")
        publishing_s = s.get("publish_time_s", 0.0)
        during = [kb for t, kb in self.rss_samples if RSS_WARMUP_S <= t <= publishing_s]
        most = max(kb for _, kb in self.rss_samples)
        values = {
            "consumer msg/s while publishing": consumer,
            "publisher/consumer": s["sent_per_s"] / consumer if consumer else None,
            "RSS first MiB": during[0] / 1024 if during else None,
            "RSS last MiB": during[-1] / 1024 if during else None,
            "RSS max MiB": most / 1024,
            "connection.blocked": s.get("connection_blocked"),
            "connection.unblocked": s.get("connection_unblocked"),
            "blocked s": s.get("blocked_s"),
            "lost": s.get("lost"),
            "messages confirmed": s.get("confirmed") or None,
        }
        if self.watermark:
            values["RSS max / watermark"] = most * 1024 / self.watermark
        if s.get("consumers") == 0 and s.get("confirmed"):
            # A backlog scenario: what each queued message costs.
            values["RSS max B/message"] = most * 1024 / s["confirmed"]
        return values

    def problems(self) -> str:
        s = self.summary
        counts = [f"{k} {s[k]}" for k in ("lost", "duplicated", "reordered", "foreign")
                  if s.get(k)]
        if not s.get("loss_checked", True):
            counts.append("loss unchecked")
        if s.get("publishers_unclosed"):
            counts.append(f"{s['publishers_unclosed']} publishers never read to their close")
        if self.exit_code not in (0, 3):
            counts.append(f"exit {self.exit_code}: {self.stderr.strip()[-200:]}")
        return ", ".join(counts) or "ok"


def loadgen_command(uri: str, case: Case, hgrm: Path | None,
                    extra: list[str] | None = None) -> list[str]:
    command = [str(LOADGEN_BIN), "--uri", uri, "--json", "--quiet",
               "--drain", str(case.drain_s), *case.args, *(extra or [])]
    if hgrm:
        command += ["--hgrm", str(hgrm)]
    return pinned(LOADGEN_CPU, command)


def run_once(broker, case: Case, index: int, hgrm: Path | None, timeout_s: float) -> Run:
    """One loadgen run; for memory cases, the broker's RSS once the idle
    connections are all open, or all through the run."""
    try:
        placement = Placement.prepare(broker) if case.cross_shard else None
    except (OSError, RuntimeError) as error:
        return Run(broker.name, index, -1, {}, f"placement failed: {error}")
    command = loadgen_command(broker.uri, case, hgrm, placement.args if placement else None)
    rss_before = rss_kb(broker.pid()) if case.measure_rss else None
    sampler = RssSampler(broker.pid()) if case.sample_rss else None
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if sampler:
        sampler.start()
    rss = None
    if case.measure_rss:
        rss = rss_when_connected(broker, IDLE_CONNECTIONS, timeout_s)
    exit_code, summary, stderr = finish_loadgen(process, timeout_s)
    return Run(broker.name, index, exit_code, summary, stderr, rss_before, rss,
               rss_samples=sampler.stop() if sampler else [], watermark=case.watermark,
               placement=placement.landed() if placement else "",
               rate_over_time=case.rate_over_time)


def finish_loadgen(process: subprocess.Popen, timeout_s: float) -> tuple[int, dict, str]:
    """Waits for a loadgen run (killing it past `timeout_s`): its exit
    status, its JSON summary ({} if none) and its stderr."""
    try:
        stdout, stderr = process.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        stdout, stderr = process.communicate()
    try:
        summary = json.loads(stdout) if stdout.strip() else {}
    except json.JSONDecodeError:
        summary = {}
    return process.returncode, summary, stderr


def loadgen_backlog(broker, args: list[str], sample_rss: bool = False
                    ) -> tuple[int, dict, str, list[tuple[float, int]]]:
    """One loadgen run of a backlog scenario (fill or drain) against
    `broker`, bounded by BACKLOG_TIMEOUT_S, with the broker's RSS read all
    through it if asked."""
    command = pinned(LOADGEN_CPU, [str(LOADGEN_BIN), "--uri", broker.uri, "--json", "--quiet",
                                   *args])
    sampler = RssSampler(broker.pid()) if sample_rss else None
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if sampler:
        sampler.start()
    exit_code, summary, stderr = finish_loadgen(process, BACKLOG_TIMEOUT_S)
    return exit_code, summary, stderr, sampler.stop() if sampler else []


def drain_args(queue: str, persistent: bool) -> list[str]:
    """loadgen consuming only, until `queue` is empty: prefetch 1000, a
    multiple-ack every 100."""
    return ["-x", "0", "-y", "1", "-u", queue, *(["-f"] if persistent else []),
            "-q", "1000", "-A", "100", "-z", "0"]


def in_memory_settings(broker) -> tuple[str, ...]:
    """The broker settings that keep r-recovery's backlog in memory."""
    return ("--queue-memory-budget", IN_MEMORY_BUDGET) if broker.name == "warren" else ()


def drain_rate(summary: dict) -> float | None:
    """Messages drained per second of consuming (loadgen -x 0: its
    "publishing" time is the consumer's)."""
    seconds = summary.get("publish_time_s")
    return summary.get("received", 0) / seconds if seconds else None


def await_backlog(broker, queue: str, messages: int) -> tuple[float | None, int | None]:
    """Seconds from the broker's exec until it reports `queue` holding
    `messages` (None if not within BACKLOG_TIMEOUT_S), and the last count
    it reported."""
    deadline = time.monotonic() + BACKLOG_TIMEOUT_S
    count = None
    while time.monotonic() < deadline:
        count = broker.queue_messages(queue)
        if count is not None and count >= messages:
            return time.monotonic() - broker.started_at, count
        time.sleep(RECOVERY_POLL_S)
    return None, count


def run_recovery(broker, case: Case, index: int, hgrm: Path | None, timeout_s: float) -> Run:
    """Scenario r on one broker, started afresh with the case's settings:
    fill, clean restart, recovery, drain; then the in-memory backlog,
    filled and drained the same way (see scenario_r)."""
    queue = f"perf-r-{os.getpid()}-{index}"
    code, fill, errors, samples = loadgen_backlog(
        broker, backlog_args(queue, case.messages, 1024, persistent=True), sample_rss=True)
    backlog = fill.get("confirmed", 0)
    rss_max = max((kb for _, kb in samples), default=0) / 1024
    print(f"  {case.name} run {index} {broker.name}: filled {backlog:,} "
          f"({fill.get('confirmed_per_s', 0):,.0f}/s), RSS max {rss_max:.1f} MiB", flush=True)
    stop_s = broker.restart()
    # warren: its AMQP port open; RabbitMQ: await_startup answered.
    ready_s = time.monotonic() - broker.started_at
    recovery_s, recovered = await_backlog(broker, queue, backlog)
    drain_code, drain, drain_errors, _ = loadgen_backlog(broker, drain_args(queue, True))
    drained = drain.get("received", 0)
    print(f"  {case.name} run {index} {broker.name}: stop {stop_s:.1f} s, recovery "
          f"{fmt(recovery_s)} s ({recovered} messages), drained {drained:,} "
          f"at {fmt(drain_rate(drain))}/s", flush=True)
    configure(broker, in_memory_settings(broker), fresh=True)
    memory_queue = f"{queue}-memory"
    memory_fill_code = loadgen_backlog(
        broker, backlog_args(memory_queue, case.messages, 1024, persistent=False))[0]
    memory_code, memory_drain, memory_errors, _ = loadgen_backlog(
        broker, drain_args(memory_queue, False))
    paged, in_memory = drain_rate(drain), drain_rate(memory_drain)
    summary = {**fill, "received": drained, "received_per_s": paged,
               "lost": max(backlog - drained, 0), "loss_checked": True}
    extra = {"backlog messages": backlog, "fill msg/s": fill.get("confirmed_per_s"),
             "RSS max MiB": rss_max, "stop s": stop_s, "ready after restart s": ready_s,
             "recovery s": recovery_s,
             "recovered messages": recovered, "drain msg/s": paged,
             "in-memory drain msg/s": in_memory, "lost": summary["lost"],
             "drain / in-memory drain": paged / in_memory if paged and in_memory else None}
    exit_code = next((c for c in [code, drain_code, memory_fill_code, memory_code] if c), 0)
    return Run(broker.name, index, exit_code, summary, errors + drain_errors + memory_errors,
               extra={k: v for k, v in extra.items() if v is not None})


@dataclass
class Placement:
    """Scenario h-shards2 on warren: the queue on shard 1, the producer and
    consumer connections on shard 0, and afterwards where they landed.

    The queue's shard is `catalog::queue_shard`, FNV-1a of vhost and name,
    so a name is chosen for it. A connection's shard is the kernel's
    SO_REUSEPORT choice, a hash of the connection's addresses and ports
    that is fixed while warren's listeners are; so plain TCP connections
    probe it (warren's debug log names the shard that accepted each peer
    port), are reset so that their ports are free at once, and loadgen
    connects from the ports that landed on shard 0. On RabbitMQ only the
    queue name applies."""

    args: list[str]
    ports: list[int]
    log_offset: int
    queue: str

    QUEUE_SHARD = 1
    CONNECTION_SHARD = 0
    PROBES = 8
    ACCEPTED = re.compile(r"accepted peer=127\.0\.0\.1:(\d+) conn=(\d+)\.")

    @classmethod
    def prepare(cls, broker) -> "Placement":
        queue = queue_on_shard(cls.QUEUE_SHARD, 2)
        if broker.name != "warren":
            return cls(["-u", queue], [], 0, queue)
        ports = cls.probe(broker.port, wanted=2)
        return cls(["-u", queue, "--local-ports", ",".join(map(str, ports))], ports,
                   WARREN_LOG.stat().st_size, queue)

    @classmethod
    def probe(cls, port: int, wanted: int) -> list[int]:
        """Local ports whose connections warren accepts on CONNECTION_SHARD."""
        found: list[int] = []
        for _ in range(5):
            offset = WARREN_LOG.stat().st_size
            probes = [socket.create_connection(("127.0.0.1", port), timeout=5)
                      for _ in range(cls.PROBES)]
            try:
                shards = accepted_shards(offset, {s.getsockname()[1] for s in probes})
            finally:
                for probe in probes:
                    # A reset, not a close: no TIME_WAIT keeps the port.
                    probe.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    probe.close()
            found += [p for p, shard in shards.items() if shard == cls.CONNECTION_SHARD]
            if len(found) >= wanted:
                return found[:wanted]
        raise RuntimeError(f"no {wanted} probe connections landed on shard {cls.CONNECTION_SHARD}")

    def landed(self) -> str:
        """Where warren's log says the run's connections were accepted."""
        if not self.ports:
            return f"queue {self.queue}"
        shards = accepted_shards(self.log_offset, set(self.ports), timeout_s=0)
        where = ", ".join(f"{role} on shard {shards.get(port, '?')}"
                          for role, port in zip(["consumer", "producer"], self.ports))
        return f"queue {self.queue} on shard {self.QUEUE_SHARD}; {where}"


def accepted_shards(offset: int, ports: set[int], timeout_s: float = 5.0) -> dict[int, int]:
    """The shard of each of `ports` as warren's log (from `offset`) names
    it, waiting up to `timeout_s` for them all."""
    deadline = time.monotonic() + timeout_s
    while True:
        with open(WARREN_LOG, "rb") as log:
            log.seek(offset)
            text = log.read().decode(errors="replace")
        shards = {int(port): int(shard) for port, shard in Placement.ACCEPTED.findall(text)
                  if int(port) in ports}
        if len(shards) == len(ports) or time.monotonic() >= deadline:
            return shards
        time.sleep(0.05)


def fnv1a(parts: list[bytes]) -> int:
    """catalog::fnv1a: 64-bit FNV-1a over length-prefixed parts."""
    value = 0xcbf29ce484222325
    for part in parts:
        for byte in len(part).to_bytes(8, "little") + part:
            value = ((value ^ byte) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return value


def queue_on_shard(shard: int, shards: int) -> str:
    """A fresh queue name that catalog::queue_shard puts on `shard`."""
    stem = f"perf-shard{shard}-{os.getpid()}-{time.monotonic_ns()}"
    suffix = 0
    while fnv1a([b"/", f"{stem}-{suffix}".encode()]) % shards != shard:
        suffix += 1
    return f"{stem}-{suffix}"


def rss_when_connected(broker, connections: int, timeout_s: float) -> int | None:
    """Waits until the broker holds `connections` established connections,
    lets it settle a second, and reads its RSS."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if established_or_listening(broker.port) >= connections:
            time.sleep(1.0)
            return rss_kb(broker.pid())
        time.sleep(0.1)
    return None


def run_case(case: Case, brokers: list, runs: int, out: Path,
             floor: dict[str, float] | None,
             disk_floors: DiskFloors | None = None) -> list[Run]:
    """N runs per broker, alternating (each index after the disk floors,
    given them); keeps the last run's .hgrm per broker."""
    results = []
    timeout_s = float(case.args[case.args.index("-z") + 1]) + case.drain_s + 90
    for index in range(1, runs + 1):
        disk_floor = disk_floors.measure() if disk_floors else None
        for broker in brokers:
            hgrm = hgrm_path(out, case, broker.name) if case.hgrm else None
            configure(broker, broker.case_settings(case), case.fresh or case.measure_rss)
            run = (case.procedure or run_once)(broker, case, index, hgrm, timeout_s)
            run.floor = floor
            run.disk_floor = disk_floor
            f = run.figures()
            print(f"  {case.name} run {index} {broker.name}: "
                  f"sent/s {run.summary.get('sent_per_s', 0):,.0f} "
                  f"received/s {run.summary.get('received_per_s', 0):,.0f} "
                  f"{'RSS %.1f MiB ' % (run.rss_kb / 1024) if run.rss_kb else ''}"
                  f"{'RSS max %.1f MiB ' % f['RSS max MiB'] if 'RSS max MiB' in f else ''}"
                  f"{run.placement + ' ' if run.placement else ''}"
                  f"[{run.problems()}]", flush=True)
            results.append(run)
    return results


def hgrm_path(out: Path, case: Case, broker: str) -> Path:
    """Beside the report: <report>-<case>-<broker>.hgrm."""
    return out.with_name(f"{out.stem}-{case.name}-{broker}.hgrm")


def compare_latency(case: Case, out: Path) -> tuple[str, str]:
    """`loadgen compare` of the two brokers' last .hgrm: the table and the SVG."""
    svg = out.with_name(f"{out.stem}-latency-{case.name.removeprefix('c-')}.svg")
    files = [hgrm_path(out, case, name) for name in ("rabbitmq", "warren")]
    if not all(f.exists() for f in files):
        return "(no .hgrm: a run failed)", ""
    command = [str(LOADGEN_BIN), "compare", *map(str, files),
               "--label", "rabbitmq", "--label", "warren", "--plot", str(svg)]
    out = subprocess.run(command, capture_output=True, text=True)
    return (out.stdout + out.stderr).strip(), svg.name


# ------------------------------------------------------------------ report


def median_figures(runs: list[Run], broker: str) -> dict[str, float]:
    by_figure: dict[str, list[float]] = {}
    for run in runs:
        if run.broker == broker:
            for name, value in run.figures().items():
                by_figure.setdefault(name, []).append(value)
    return {name: statistics.median(values) for name, values in by_figure.items()}


def fmt(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}" if abs(value) >= 100 or value.is_integer() else f"{value:,.2f}"


def ratio(warren: float | None, rabbitmq: float | None) -> str:
    if warren is None or not rabbitmq:
        return "-"
    return f"{warren / rabbitmq:.3g}x"


def median_table(runs: list[Run]) -> list[str]:
    warren, rabbitmq = median_figures(runs, "warren"), median_figures(runs, "rabbitmq")
    lines = ["| figure (median) | warren | RabbitMQ | warren/RabbitMQ |", "|---|---:|---:|---:|"]
    for name in dict.fromkeys([*warren, *rabbitmq]):
        lines.append(f"| {name} | {fmt(warren.get(name))} | {fmt(rabbitmq.get(name))} "
                     f"| {ratio(warren.get(name), rabbitmq.get(name))} |")
    return lines


def runs_table(runs: list[Run]) -> list[str]:
    """Every run's key values; RSS is the mid-run reading (g) or the
    maximum (runs that sample it)."""
    lines = ["| run | broker | sent/s | received/s | confirmed/s | p50 us | p99 us "
             "| p99.9 us | max us | RSS MiB | check |",
             "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for run in runs:
        f, latency = run.figures(), run.summary.get("latency_us", {})
        placement = f" ({run.placement})" if run.placement else ""
        lines.append(
            f"| {run.index} | {run.broker} | {fmt(f.get('sent/s'))} | {fmt(f.get('received/s'))} "
            f"| {fmt(f.get('confirmed/s'))} | {fmt(latency.get('p50'))} | {fmt(latency.get('p99'))} "
            f"| {fmt(latency.get('p99.9'))} | {fmt(latency.get('max'))} "
            f"| {fmt(f.get('RSS MiB', f.get('RSS max MiB')))} | {run.problems()}{placement} |")
    return lines


def confirm_runs_table(runs: list[Run]) -> list[str]:
    """Every run's confirm latency beside the disk floors measured just
    before it, for a case compared with them."""
    lines = ["Confirm latency per run, beside the floors measured just before it "
             "(p50 / p99 us):", "",
             "| run | broker | confirm | fdatasync | durable echo | p99 / fdatasync "
             "| p99 / durable echo |", "|---:|---|---:|---:|---:|---:|---:|"]
    for run in runs:
        f, floors = run.figures(), run.disk_floor or {}
        pair = [f"{fmt(p.get('p50'))} / {fmt(p.get('p99'))}" for p in (
            run.summary.get("confirm_latency_us", {}), floors.get("fdatasync", {}),
            floors.get("durable echo", {}))]
        lines.append(f"| {run.index} | {run.broker} | {' | '.join(pair)} "
                     f"| {fmt(f.get('confirm p99 / fdatasync'))} "
                     f"| {fmt(f.get('confirm p99 / durable echo'))} |")
    return lines


HEADLINE = {
    "c": ["latency p50 us", "latency p99 us", "latency p50 / floor", "latency p99 / floor"],
    "g": ["RSS idle MiB", "RSS MiB", "RSS growth KiB/conn"],
    "b": ["received/s", "confirmed/s"],
    "p": ["confirmed/s", "received/s", "confirm p50 us", "confirm p99 us",
          "confirm p50 / fdatasync", "confirm p99 / fdatasync",
          "confirm p50 / durable echo", "confirm p99 / durable echo"],
    "h": ["consumer msg/s while publishing", "sent/s", "publisher/consumer",
          "RSS first MiB", "RSS last MiB", "RSS max MiB"],
    "i": ["RSS max MiB", "RSS max / watermark", "connection.blocked", "connection.unblocked",
          "blocked s", "lost"],
    "r": ["backlog messages", "fill msg/s", "RSS max MiB", "stop s", "ready after restart s",
          "recovery s",
          "drain msg/s", "in-memory drain msg/s", "drain / in-memory drain", "lost"],
    "s": ["messages confirmed", "confirmed/s", "RSS max MiB", "RSS max B/message"],
    "t": ["sent/s", "publish msg/s min (1 s)", "publish msg/s last third",
          "seconds with nothing sent", "blocked s", "RSS max MiB", "RSS max / watermark",
          "received/s", "lost"],
}

# Issue 8's targets for warren: (case, figure, comparison, value). A value
# of None is the case's own backlog size.
TARGETS = [
    ("p-classic", "confirmed/s", ">=", 150_000),
    ("p-10k", "confirm p50 / fdatasync", "<=", 2),
    ("p-10k", "confirm p99 / fdatasync", "<=", 4),
    ("r-recovery", "RSS max MiB", "<", 200),
    ("r-recovery", "recovery s", "<=", 5),
    ("r-recovery", "drain / in-memory drain", ">=", 0.5),
    ("r-recovery", "lost", "==", 0),
    ("s-10m", "messages confirmed", ">=", None),
    ("s-10m", "RSS max MiB", "<", 400),
    ("t-flood", "seconds with nothing sent", "==", 0),
    ("t-flood", "lost", "==", 0),
]
COMPARISONS = {"<": float.__lt__, "<=": float.__le__, ">=": float.__ge__, "==": float.__eq__}


def targets_table(results: list[tuple[Case, list[Run]]]) -> list[str]:
    """warren's medians against issue 8's targets, for the cases that ran."""
    lines = []
    for case, runs in results:
        warren = median_figures(runs, "warren")
        for name, figure, comparison, value in TARGETS:
            if name != case.name:
                continue
            target = float(case.messages if value is None else value)
            measured = warren.get(figure)
            verdict = ("not measured" if measured is None else
                       "met" if COMPARISONS[comparison](measured, target) else "**missed**")
            lines.append(f"| {case.name} | {figure} | {comparison} {fmt(target)} "
                         f"| {fmt(measured)} | {verdict} |")
    if not lines:
        return []
    return ["## Issue 8 targets (warren)", "",
            "| case | figure (median) | target | warren | |", "|---|---|---:|---:|---|",
            *lines, ""]


def rate_over_time(runs: list[Run]) -> list[str]:
    """Each broker's publish rate second by second in its last run."""
    lines = ["Publish rate by second while publishing, last run (k msg/s):", ""]
    for broker in ("warren", "rabbitmq"):
        last = [run for run in runs if run.broker == broker][-1:]
        if last:
            rates = " ".join(f"{rate / 1000:.0f}" for rate in last[0].publishing_rates())
            lines.append(f"- {broker}: {rates or '-'}")
    return [*lines, ""]


def headline_table(results: list[tuple[Case, list[Run]]]) -> list[str]:
    lines = ["| scenario | figure (median) | warren | RabbitMQ | warren/RabbitMQ |",
             "|---|---|---:|---:|---:|"]
    for case, runs in results:
        warren, rabbitmq = median_figures(runs, "warren"), median_figures(runs, "rabbitmq")
        for name in HEADLINE.get(case.name[0], ["sent/s", "received/s"]):
            mark = "" if case.like_for_like else " (not like-for-like)"
            lines.append(f"| {case.name}{mark} | {name} | {fmt(warren.get(name))} "
                         f"| {fmt(rabbitmq.get(name))} | {ratio(warren.get(name), rabbitmq.get(name))} |")
    return lines


def machine() -> list[str]:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = next((l.split(":", 1)[1].strip() for l in cpuinfo.splitlines()
                  if l.startswith("model name")), platform.processor())
    memory = next(l.split(":", 1)[1].strip() for l in Path("/proc/meminfo").read_text().splitlines()
                  if l.startswith("MemTotal"))
    return [f"- CPU: {model}, {os.cpu_count()} logical cores",
            f"- Memory: {memory}",
            f"- Kernel: {platform.system()} {platform.release()}",
            f"- rabbitmq-server: {package_version('rabbitmq-server')}, "
            f"Erlang {package_version('erlang-base')}",
            f"- rustc: {command_output(['rustc', '--version'])}"]


def package_version(name: str) -> str:
    return command_output(["dpkg-query", "-W", "-f=${Version}", name]) or "unknown"


def command_output(command: list[str]) -> str:
    try:
        return subprocess.run(command, capture_output=True, text=True).stdout.strip()
    except OSError:
        return ""


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


@dataclass
class Context:
    commit: str
    dirty: bool
    started: datetime.datetime
    runs: int
    duration: float
    load_before: str
    load_after: str = ""
    elapsed_s: float = 0.0
    brokers: list = field(default_factory=list)
    floor: dict[int, list[dict]] = field(default_factory=dict)
    disk_floors: DiskFloors = field(default_factory=lambda: DiskFloors(0.0))


def report(ctx: Context, results: list[tuple[Case, list[Run]]],
           latency: dict[str, tuple[str, str]]) -> str:
    lines = [f"# warren vs RabbitMQ — {ctx.started:%Y-%m-%d}", "",
             f"- Commit: `{ctx.commit}`{' (working tree had uncommitted changes)' if ctx.dirty else ''}",
             f"- Date: {ctx.started:%Y-%m-%d %H:%M:%S %Z}",
             f"- Runs: {ctx.runs} per broker per scenario, alternating warren/RabbitMQ; "
             f"{ctx.duration:g} s of publishing per run; medians below",
             f"- Total time: {ctx.elapsed_s / 60:.1f} min",
             f"- Load average (1/5/15 min) before: {ctx.load_before}; after: {ctx.load_after} "
             "(the machine is shared; noise hits both brokers alike, so read the ratios)",
             "", "## Machine", "", *machine(), "",
             "## Setup", "",
             "Broker on CPU 0, loadgen on CPU 1. Both brokers stay up for the whole matrix "
             "(except scenarios g and i, which start each afresh per run, and cases with "
             "their own broker settings, which restart them); the idle one sits on CPU 0 "
             "beside the measured one. The default commands:", "", "```",
             *[" ".join(b.command) for b in ctx.brokers],
             *[f"# {b.name} URI: {b.uri}" for b in ctx.brokers],
             "# RabbitMQ runs as the rabbitmq user when started by root, with: " + " ".join(
                 f"{k}={v!r}" if " " in v else f"{k}={v}"
                 for k, v in ctx.brokers[1].env.items() if k.startswith(("RABBITMQ_", "ERL_"))),
             "```", "",
             "## Headline", "",
             "Rates: higher is better, so a ratio above 1 favours warren. Latency and "
             "memory: lower is better, so a ratio below 1 favours warren.", "",
             *headline_table(results), "",
             *targets_table(results),
             *floor_section(ctx.floor),
             *disk_floor_section(ctx.disk_floors.fdatasync),
             *durable_floor_section(ctx.disk_floors.durable_echo)]
    for case, runs in results:
        lines += case_section(case, runs, latency.get(case.name))
    return "\n".join(lines) + "\n"


def floor_section(floor: dict[int, list[dict]]) -> list[str]:
    """The echo floor: medians per rate, and every run."""
    labels = ["p50", "p75", "p90", "p99", "p99.9", "p99.99", "max"]
    lines = ["## Floor: C echo over loopback", "",
             "perf/echo.c: a plain blocking TCP echo, server on CPU 0 (where the brokers "
             "run, idle meanwhile), client on CPU 1, 16-byte messages, TCP_NODELAY, sent "
             "at a fixed rate and stamped with their scheduled send time like loadgen's. "
             "Round trip in microseconds: what two wake-ups and two loopback hops cost "
             "on this machine now. The c scenarios give p50 and p99 as multiples of the "
             "median here.", "",
             "| rate msg/s | runs | " + " | ".join(labels) + " |",
             "|---:|---:|" + "---:|" * len(labels)]
    for rate, results in floor.items():
        medians = floor_medians(results)
        lines.append(f"| {rate:,} | {len(results)} | "
                     + " | ".join(fmt(medians.get(label)) for label in labels) + " |")
    lines += ["", "Per run (p50 / p99 us): " + "; ".join(
        f"{rate // 1000}k: " + ", ".join(
            f"{r.get('latency_us', {}).get('p50', '-')}/{r.get('latency_us', {}).get('p99', '-')}"
            if r else "failed" for r in results)
        for rate, results in floor.items()), ""]
    return lines


def disk_floor_section(results: list[dict]) -> list[str]:
    """The fdatasync floor: medians, and every run."""
    if not results:
        return []
    medians = disk_floor_medians(results)
    return ["## Floor: fdatasync", "",
            f"perf/fsync.c: {FSYNC_RECORDS} appends of 1 KiB to a new file in "
            f"{tempfile.gettempdir()} (where warren's data directory is made), each followed "
            "by fdatasync, pinned to CPU 0, measured before each run index of p-10k; each "
            "run gives its confirm latency as multiples of the measurement just before it.",
            "",
            "| runs | p50 us | p99 us |", "|---:|---:|---:|",
            f"| {len(results)} | {fmt(medians.get('p50'))} | {fmt(medians.get('p99'))} |", "",
            "Per run (p50 / p99 us): " + ", ".join(
                f"{r.get('p50', '-')}/{r.get('p99', '-')}" if r else "failed" for r in results),
            ""]


def durable_floor_section(results: list[dict]) -> list[str]:
    """The durable echo: medians, and every run."""
    if not results:
        return []
    labels = ["p50", "p90", "p99", "p99.9", "max"]
    medians = floor_medians(results)
    return ["## Floor: durable echo", "",
            f"perf/echo.c with a log: the echo server appends each read to a file in "
            f"{tempfile.gettempdir()} and fdatasyncs it before echoing it (one group commit "
            f"per read, nothing else), the client sends {DURABLE_ECHO_SIZE}-byte messages at "
            f"{DURABLE_ECHO_RATE:,} msg/s, pinned as for the echo, measured with the "
            "fdatasync floor before each run index of p-10k. What a confirm that waits "
            "for the disk costs end to end on this machine now with the simplest server "
            "(one that overlaps syncs can answer sooner on average); each p-10k run "
            "gives its confirm latency as multiples of this too.", "",
            "| runs | " + " | ".join(f"{label} us" for label in labels) + " |",
            "|---:|" + "---:|" * len(labels),
            f"| {len(results)} | " + " | ".join(fmt(medians.get(label)) for label in labels)
            + " |", "",
            "Per run (p50 / p99 us): " + ", ".join(
                f"{r.get('latency_us', {}).get('p50', '-')}/"
                f"{r.get('latency_us', {}).get('p99', '-')}" if r else "failed"
                for r in results), ""]


def disk_floor_medians(results: list[dict]) -> dict[str, float]:
    return {label: statistics.median(r[label] for r in results if label in r)
            for label in ("p50", "p99") if any(label in r for r in results)}


def case_section(case: Case, runs: list[Run], latency: tuple[str, str] | None) -> list[str]:
    lines = [f"## {case.name}: {case.title}", "", case.doc, ""]
    if case.note:
        lines += [case.note, ""]
    if case.warren_flags or case.rabbitmq_conf:
        lines += [f"Broker settings for this case: warren `{' '.join(case.warren_flags) or '(defaults)'}`; "
                  f"rabbitmq.conf `{'; '.join(case.rabbitmq_conf) or '(empty)'}`.", ""]
    hgrm = Path(f"{case.name}-BROKER.hgrm") if case.hgrm else None
    lines += ["```", " ".join(loadgen_command("URI", case, hgrm)), "```", ""]
    lines += [*median_table(runs), "", "Per run:", "", *runs_table(runs), ""]
    if case.disk_floor:
        lines += [*confirm_runs_table(runs), ""]
    if case.rate_over_time:
        lines += rate_over_time(runs)
    if latency:
        table, svg = latency
        lines += ["Last run's distributions, `loadgen compare` (ratios relative to RabbitMQ):",
                  "", "```", table, "```", ""]
        if svg:
            lines += [f"![latency by percentile, {case.name}]({svg})", ""]
    return lines


# -------------------------------------------------------------------- main


def ensure_tools() -> None:
    """RabbitMQ from Debian if missing; the release binaries, up to date."""
    if not Path("/usr/lib/rabbitmq/bin/rabbitmq-server").exists():
        subprocess.run(["apt-get", "update"], check=True)
        subprocess.run(["apt-get", "install", "-y", "rabbitmq-server"], check=True,
                       env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    if not (WARREN_BIN.exists() and LOADGEN_BIN.exists()):
        subprocess.run(["cargo", "build", "--release", "-p", "warren", "-p", "loadgen"],
                       cwd=ROOT, check=True)
    build_floor_tool(ECHO_SOURCE, ECHO_BIN)
    build_floor_tool(FSYNC_SOURCE, FSYNC_BIN)
    if (os.cpu_count() or 1) < 2:
        sys.exit("needs 2 CPUs: broker on CPU 0, loadgen on CPU 1")


def adopt_orphans() -> None:
    """Makes this script the reaper of its orphaned descendants (epmd and
    erl helpers daemonize), so they do not linger as zombies under an init
    that does not reap."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def reap_orphans(timeout_s: float = 3.0) -> None:
    """Waits a little for the killed orphans to die, and reaps them."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            time.sleep(0.1)


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="runs per broker per scenario")
    parser.add_argument("--duration", type=float, default=6.0, help="publishing seconds per run")
    parser.add_argument("--soak", type=float, default=30.0,
                        help="publishing seconds of h-p100 (RSS over time)")
    parser.add_argument("--only", help="scenarios or cases, comma-separated (a, c-10k, h-p100, ...); "
                                       "the floor is always measured")
    parser.add_argument("--out", type=Path, help="report file (default perf/results/<date>-<hash>.md)")
    parser.add_argument("--scale", type=float, default=1.0,
                        help="multiply the backlogs of r-recovery (1M) and s-10m (10M): "
                             "0.01 for a quick look")
    parser.add_argument("--without-watermark-flag", action="store_true",
                        help="do not pass --memory-high-watermark to warren (one that predates it)")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    options = Options(args.duration, args.soak, watermark_flag=not args.without_watermark_flag,
                      scale=args.scale)
    cases = all_cases(options, args.only)
    ensure_tools()
    adopt_orphans()
    ctx = Context(commit=git("rev-parse", "HEAD"), dirty=bool(git("status", "--porcelain", "--untracked-files=no")),
                  started=datetime.datetime.now().astimezone(), runs=args.runs,
                  duration=args.duration, load_before=loadavg(),
                  disk_floors=DiskFloors(args.duration))
    out = (args.out or RESULTS / f"{ctx.started:%Y-%m-%d}-{ctx.commit[:8]}.md").resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    ctx.brokers = [Warren(), RabbitMQ()]
    results, latency = [], {}
    try:
        for broker in ctx.brokers:
            broker.start()
        print("floor: C echo over loopback", flush=True)
        ctx.floor = measure_floor(args.runs, args.duration)
        for case in cases:
            print(f"{case.name}: {case.title}", flush=True)
            floor = floor_medians(ctx.floor[case.rate]) if case.rate else None
            results.append((case, run_case(case, ctx.brokers, args.runs, out, floor,
                                           ctx.disk_floors if case.disk_floor else None)))
            if case.hgrm:
                latency[case.name] = compare_latency(case, out)
    except KeyboardInterrupt:
        print("interrupted; writing what ran", file=sys.stderr)
    finally:
        for broker in ctx.brokers:
            broker.stop()
            # The report's setup shows the default commands.
            broker.settings = ()
        reap_orphans()
    ctx.elapsed_s = (datetime.datetime.now().astimezone() - ctx.started).total_seconds()
    ctx.load_after = loadavg()
    out.write_text(report(ctx, results, latency))
    print(f"report: {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")


if __name__ == "__main__":
    main()
