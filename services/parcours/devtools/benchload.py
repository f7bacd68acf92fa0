"""The bench's HTTP load, from generators that are not the bottleneck (issue 13).

- **Closed loop, throughput**: `wrk` (compiled, Debian package, installed by `make system-deps`),
  one thread and a few dozen connections, each POSTing the next message as soon as the previous
  answer arrived, cycling over the bench's cases (a Lua script written to a temporary file; its
  `done()` hook prints the figures as one JSON line). Non-2xx answers are counted (wrk counts every
  status ≥ 400) and left out of the accepted rate.
- **The reference**: a bare FastAPI endpoint (`benchbare`), driven by the same wrk settings in
  the same run: what the framework gives on this machine.
- **Open loop, latency**: `OpenLoop` sends POSTs at a fixed rate whatever the answers (a request
  is never held back by a slow one: another keep-alive connection is taken or opened), over raw
  HTTP/1.1 with pre-encoded requests, and measures each latency from the request's *scheduled*
  send time (no coordinated omission). `ViewTail` follows the structure's compacted view topic
  (`read_committed`) and records when each accepted message's item (`<case>/message:<id>`)
  appears, for the accepted-POST-to-view latency.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from parcours.bus.kafkaio import KafkaAccess

BODY = b'{"body":"Bench."}'
WRK_MARK = "PARCOURS-WRK "
WARM_CONNECTIONS = 64  # the open loop's connections opened before its schedule begins


def message_path(case: str) -> str:
    return f"/v1/cases/{case}/messages"


def case_name(i: int) -> str:
    """The bench's pre-produced edge cases: case-a0 .. case-a<n-1>."""
    return f"case-a{i}"


# --- closed loop: wrk ------------------------------------------------------------------------------

_LUA = """-- written by parcours bench: POST a message to each case in turn
wrk.method = "POST"
wrk.body = %(body)s
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = %(auth)s

local requests = {}
local i = 0

function init(args)
  for c = 0, %(last)d do
    requests[#requests + 1] = wrk.format(nil, "/v1/cases/case-a" .. c .. "/messages")
  end
end

function request()
  i = i %% #requests + 1
  return requests[i]
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('%(mark)s{"requests":%%d,"duration_us":%%d,"non_2xx":%%d,"connect":%%d,"read":%%d,'
    .. '"write":%%d,"timeout":%%d,"latency_mean_us":%%.1f,"latency_p50_us":%%d,"latency_p99_us":%%d,"latency_max_us":%%d}\\n',
    summary.requests, summary.duration, e.status, e.connect, e.read, e.write, e.timeout,
    latency.mean, latency:percentile(50), latency:percentile(99), latency.max))
end
"""


def _lua_string(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def wrk_script(cases: int, token: str) -> str:
    """The Lua script: POST `{"body":"Bench."}` as `token` to case-a0 .. case-a<cases-1>, in turn."""
    if cases < 1:
        raise ValueError("wrk_script needs one case at least")
    return _LUA % {"body": _lua_string(BODY.decode()), "auth": _lua_string(f"Bearer {token}"), "last": cases - 1, "mark": WRK_MARK}


@dataclass(frozen=True)
class WrkResult:
    requests: int  # answers received, whatever their status
    seconds: float
    non_2xx: int  # status >= 400 (wrk's "Non-2xx or 3xx responses")
    socket_errors: int  # connect, read, write errors and timeouts
    latency_mean_ms: float
    latency_p50_ms: float
    latency_p99_ms: float
    latency_max_ms: float

    @property
    def accepted_per_s(self) -> float:
        return (self.requests - self.non_2xx) / self.seconds if self.seconds > 0 else float("nan")

    def figures(self, prefix: str) -> dict[str, Any]:
        return {f"{prefix}_posts_per_s": self.accepted_per_s, f"{prefix}_requests": self.requests,
                f"{prefix}_non_2xx": self.non_2xx, f"{prefix}_socket_errors": self.socket_errors,
                f"{prefix}_latency_mean_ms": self.latency_mean_ms, f"{prefix}_latency_p99_ms": self.latency_p99_ms}


def parse_wrk(stdout: str) -> WrkResult:
    """The figures the script's `done()` printed."""
    for line in stdout.splitlines():
        if line.startswith(WRK_MARK):
            d = json.loads(line[len(WRK_MARK):])
            return WrkResult(requests=d["requests"], seconds=d["duration_us"] / 1e6, non_2xx=d["non_2xx"],
                             socket_errors=d["connect"] + d["read"] + d["write"] + d["timeout"],
                             latency_mean_ms=d["latency_mean_us"] / 1000, latency_p50_ms=d["latency_p50_us"] / 1000,
                             latency_p99_ms=d["latency_p99_us"] / 1000, latency_max_ms=d["latency_max_us"] / 1000)
    raise RuntimeError(f"bench: no figures in wrk's output:\n{stdout}")


def run_wrk(base: str, script: str, *, seconds: float, connections: int, threads: int = 1) -> WrkResult:
    """`wrk` against `base` (e.g. http://127.0.0.1:8101) with the script at path `script`."""
    res = subprocess.run(["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{max(1, round(seconds))}s",
                          "--timeout", "10s", "-s", script, base],
                         capture_output=True, text=True, timeout=seconds + 60, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"bench: wrk failed ({res.returncode}): {res.stderr.strip() or res.stdout.strip()}")
    return parse_wrk(res.stdout)


# --- open loop -----------------------------------------------------------------------------------

def request_bytes(host: str, port: int, path: str, token: str, body: bytes = BODY) -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body


def parse_head(head: bytes) -> tuple[int, int | None, bool]:
    """Status, Content-Length (None if absent) and whether the server closes the connection."""
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    length, close = None, False
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value.strip())
        elif name == b"connection":
            close = value.strip().lower() == b"close"
    return status, length, close


@dataclass(slots=True)
class Sample:
    scheduled: float  # time.monotonic() at which the request was due
    sent: float = math.nan
    answered: float = math.nan
    status: int = 0
    body: bytes = b""
    error: str | None = None


@dataclass(slots=True)
class _Conn:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    last_used: float


@dataclass
class OpenLoop:
    """POSTs at `rate` per second for `seconds`, sent on schedule whatever the answers."""

    host: str
    port: int
    requests: Sequence[bytes]  # sent in turn
    max_connections: int = 1024
    #: a connection idle this long is not reused (uvicorn closes idle keep-alive connections after 5 s)
    idle_s: float = 4.0
    timeout_s: float = 30.0
    connections_opened: int = 0
    _idle: list[_Conn] = field(default_factory=list)

    async def _acquire(self) -> _Conn:
        now = time.monotonic()
        while self._idle:
            c = self._idle.pop()  # the most recently used first: the others may age out
            if now - c.last_used < self.idle_s and not c.writer.is_closing():
                return c
            c.writer.close()
        reader, writer = await asyncio.open_connection(self.host, self.port)
        self.connections_opened += 1
        return _Conn(reader, writer, now)

    async def _one(self, sample: Sample, request: bytes, slots: asyncio.Semaphore) -> None:
        async with slots:
            conn = None
            try:
                async with asyncio.timeout(self.timeout_s):
                    conn = await self._acquire()
                    sample.sent = time.monotonic()
                    conn.writer.write(request)
                    head = await conn.reader.readuntil(b"\r\n\r\n")
                    sample.status, length, close = parse_head(head)
                    if length is None:
                        raise ValueError("no Content-Length")
                    sample.body = await conn.reader.readexactly(length)
                    sample.answered = time.monotonic()
                if close:
                    conn.writer.close()
                else:
                    conn.last_used = sample.answered
                    self._idle.append(conn)
            except (OSError, EOFError, TimeoutError, ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
                sample.error = type(exc).__name__
                if conn is not None:
                    conn.writer.close()

    async def warm(self, connections: int) -> None:
        """Open `connections` before the schedule begins (more are opened when they are all busy)."""
        conns = await asyncio.gather(*(self._acquire() for _ in range(connections)))
        now = time.monotonic()
        for c in conns:
            c.last_used = now
        self._idle.extend(conns)

    async def run(self, rate: float, seconds: float) -> list[Sample]:
        total = max(1, round(rate * seconds))
        start = time.monotonic() + 0.01
        samples = [Sample(start + i / rate) for i in range(total)]
        slots = asyncio.Semaphore(self.max_connections)
        tasks: set[asyncio.Task[None]] = set()
        i = 0
        while i < total:
            now = time.monotonic()
            if samples[i].scheduled > now:
                await asyncio.sleep(samples[i].scheduled - now)
                continue
            while i < total and samples[i].scheduled <= now:  # every request now due, late ones included
                t = asyncio.create_task(self._one(samples[i], self.requests[i % len(self.requests)], slots))
                tasks.add(t)
                t.add_done_callback(tasks.discard)
                i += 1
        if tasks:
            await asyncio.wait(tasks)
        for c in self._idle:
            c.writer.close()
        self._idle.clear()
        return samples


class ViewTail:
    """When each message item first appears in a structure's view topic (`<case>/message:<id>`)."""

    def __init__(self, kafka: KafkaAccess, topic: str) -> None:
        self.kafka, self.topic = kafka, topic
        self.seen: dict[str, float] = {}
        self._consumer: Any = None
        self._task: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()

    async def start(self) -> None:
        """Positioned at the topic's end before returning: every later record is seen."""
        from aiokafka import AIOKafkaConsumer, TopicPartition

        from parcours.bus.kafkaio import partition_counts

        parts = [TopicPartition(self.topic, p) for p in range((await partition_counts(self.kafka, [self.topic]))[self.topic])]
        self._consumer = AIOKafkaConsumer(**self.kafka.aiokafka(), group_id=None, enable_auto_commit=False,
                                          isolation_level="read_committed", fetch_max_wait_ms=100)
        await self._consumer.start()
        self._consumer.assign(parts)
        await self._consumer.seek_to_end(*parts)
        for tp in parts:
            await self._consumer.position(tp)
        self._task = asyncio.create_task(self._tail())

    async def _tail(self) -> None:
        marker = b"/message:"
        while True:
            got = await self._consumer.getmany(timeout_ms=100)
            now = time.monotonic()
            for records in got.values():
                for r in records:
                    if r.value is not None and r.key and marker in r.key:
                        self.seen.setdefault(r.key.split(marker, 1)[1].decode(), now)
            if got:
                self._changed.set()

    async def wait_for(self, ids: set[str], grace_s: float) -> None:
        deadline = time.monotonic() + grace_s
        while not ids <= self.seen.keys() and (remaining := deadline - time.monotonic()) > 0:
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._consumer is not None:
            await self._consumer.stop()


def pct(values: Sequence[float], q: float) -> float:
    """The q-th percentile (nearest rank) of `values`; nan when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


def open_loop_figures(samples: Sequence[Sample], seen: dict[str, float], rate: float) -> dict[str, Any]:
    """POST latency from the scheduled send, accepted-POST-to-view latency, errors, unseen messages."""
    sent = [s.sent for s in samples if not math.isnan(s.sent)]
    accepted = [s for s in samples if s.status == HTTPStatus.ACCEPTED]
    post = [(s.answered - s.scheduled) * 1000 for s in samples if not math.isnan(s.answered)]
    lag = [(s.sent - s.scheduled) * 1000 for s in samples if not math.isnan(s.sent)]
    to_view: list[float] = []
    unseen = 0
    for s in accepted:
        mid = json.loads(s.body).get("message_id")
        if mid in seen:
            to_view.append((seen[mid] - s.answered) * 1000)
        else:
            unseen += 1
    span = max(sent) - min(sent) if len(sent) > 1 else 0.0
    # the POST latency's p99 per 10 s of schedule: a warm-up or a backlog that grows shows here
    windows: dict[int, list[float]] = {}
    first = samples[0].scheduled if samples else 0.0
    for s in samples:
        if not math.isnan(s.answered):
            windows.setdefault(int((s.scheduled - first) // 10), []).append((s.answered - s.scheduled) * 1000)
    return {
        "open_rate_target": rate, "open_requests": len(samples),
        "open_sent_per_s": (len(sent) - 1) / span if span > 0 else float("nan"),
        "open_send_lag_p99_ms": pct(lag, 99), "open_send_lag_max_ms": max(lag, default=float("nan")),
        "open_post_p99_ms_per_10s": [round(pct(windows[w], 99), 1) for w in sorted(windows)],
        "open_post_p50_ms": pct(post, 50), "open_post_p99_ms": pct(post, 99), "open_post_max_ms": max(post, default=float("nan")),
        "open_accepted": len(accepted), "open_errors": sum(s.error is not None for s in samples),
        "open_non_202": sum(s.error is None and s.status != HTTPStatus.ACCEPTED for s in samples),
        "open_unseen_in_view": unseen,
        "open_view_p50_ms": pct(to_view, 50), "open_view_p99_ms": pct(to_view, 99), "open_view_max_ms": max(to_view, default=float("nan")),
    }


async def open_loop(kafka: KafkaAccess, view_topic: str, host: str, port: int, token: str, cases: int, *,
                    rate: float, seconds: float, grace_s: float) -> tuple[dict[str, Any], int]:
    """The open-loop run against one adapter, its view topic tailed; the figures and the
    connections it opened."""
    tail = ViewTail(kafka, view_topic)
    await tail.start()
    try:
        load = OpenLoop(host, port, [request_bytes(host, port, message_path(case_name(c)), token) for c in range(cases)])
        await load.warm(WARM_CONNECTIONS)
        samples = await load.run(rate, seconds)
        ids = {str(json.loads(s.body).get("message_id")) for s in samples if s.status == HTTPStatus.ACCEPTED}
        await tail.wait_for(ids, grace_s)
        return open_loop_figures(samples, dict(tail.seen), rate), load.connections_opened
    finally:
        await tail.stop()
