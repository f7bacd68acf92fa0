"""The figures of `parcours bench` as text (and one JSON line), and whether an open loop kept its schedule."""

from __future__ import annotations

import json
import os
import sys
from typing import Any


def report(f: dict[str, Any]) -> str:
    """The figures as text, then as one JSON line; a part not run (`--only`) is left out."""
    lines = [f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}"]
    if "processor_events_per_s" in f:
        lines += _processor_report(f)
    if "processor_three_nodes_events_per_s" in f:
        one, three = f["processor_one_node_events_per_s"], f["processor_three_nodes_events_per_s"]
        lines += [f"processor, one node:              {one:>10,.0f} events/s",
                  (f"processor, three nodes:           {three:>10,.0f} events/s = {three / one:.2f}x one node "
                   "(replication factor 3, min ISR 2; the same burst, the same 2 cores)")]
    if "rebuild_seconds" in f:
        lines.append(f"views rebuild:                    {f['rebuild_events']:,} events in {f['rebuild_seconds']:.0f} s "
                     f"({f['rebuild_events'] / f['rebuild_seconds']:,.0f} events/s)")
    if "adapter_posts_per_s" in f:
        lines += _edge_report(f)
    if "adapter_restart" in f:
        lines.append("adapter start and restart (read model on disk, views of one DAC):")
        for views, r in f["adapter_restart"].items():
            lines.append(f"  {int(views):>7,} views: first start {r['first_start_s']:.1f} s, restart {r['restart_s']:.1f} s "
                         f"({r['offsets_read_at_restart']:,} offsets read), RSS {r['rss_mb']:.0f} MB")
        lines.append(f"  read model on disk: {f['adapter_store_mb']:.0f} MB")
    return "\n".join(lines) + "\n" + json.dumps(f)


def _processor_report(f: dict[str, Any]) -> list[str]:
    raw, base, proc = f["raw_consume_decode_events_per_s"], f["engine_baseline_events_per_s"], f["processor_events_per_s"]
    rss = f["processor_rss_mb_at_cases"]
    return [
        f"burst:                            {f['events']:,} events ({f['cases']:,} cases of {f['per_case']})",
        f"raw produce (confluent-kafka):    {f['produce_events_per_s']:>10,.0f} events/s",
        f"raw consume + decode:             {raw:>10,.0f} events/s",
        f"engine baseline (Quix, EOS):      {base:>10,.0f} events/s (state update + one output per event)",
        f"processor, cases of {f['per_case']:<5}        {proc:>10,.0f} events/s = {proc / raw:.2f}x raw, {proc / base:.2f}x engine",
        (f"processor, cases of {f['long_per_case']:<5}        {f['processor_long_cases_events_per_s']:>10,.0f} events/s "
         f"({f['long_cases']} cases; {f['processor_long_cases_events_per_s'] / proc:.2f}x the short cases)"),
        *_split_report(f, raw),
        *([(f"processor, two instances:         {two:>10,.0f} events/s = {two / raw:.2f}x raw ({two / proc:.2f}x one instance; "
            "one group, the same 2 cores)")] if (two := f.get("processor_two_instances_events_per_s")) else []),
        "processor RSS:                    " + ", ".join(f"{v:,.0f} MB after {k:,} cases" for k, v in rss.items()),
        *([(f"processor restart after SIGKILL: first event {r['first_event_s']:.1f} s; then a new case in a view "
            f"{r['new_event_to_view_s']:.1f} s after it was produced")] if (r := f.get("processor_restart_after_kill")) else []),
    ]


def _split_report(f: dict[str, Any], raw: float) -> list[str]:
    sp = f.get("processor_time_split")
    if not sp:
        return []
    free = sp["free_step_events_per_s"]
    return [
        (f"  where its time goes, per event:  {sp['us_per_event']:,.0f} µs = {sp['step_us_per_event']:,.0f} µs in the case-file step "
         f"+ {sp['rest_us_per_event']:,.0f} µs in the engine, Kafka client and commits; "
         f"{sp['cpu_us_per_event']:,.0f} µs of CPU (all its threads)"),
        (f"  what it writes, per event:       {sp['records_written_per_event']:.1f} records + {sp['state_writes_per_event']:.1f} "
         "state keys (changelog records)"),
        (f"  with a step that cost nothing:   {free:>10,.0f} events/s = {free / raw:.2f}x raw: the ceiling of a processor "
         "writing these records on this engine"),
    ]


def _edge_report(f: dict[str, Any]) -> list[str]:
    w = f["wrk"]

    def closed(who: str) -> str:
        bad = f"{f[who + '_non_2xx']:,} non-2xx, {f[who + '_socket_errors']:,} socket errors"
        return (f"{f[who + '_posts_per_s']:>10,.0f} /s accepted ({f[who + '_requests']:,} answers, {bad}; "
                f"latency mean {f[who + '_latency_mean_ms']:.1f} ms, p99 {f[who + '_latency_p99_ms']:.1f} ms)")

    problems = f["open_errors"] + f["open_non_202"] + f["open_unseen_in_view"]
    return [
        f"HTTP edge, closed loop (wrk, {w['threads']} thread, {w['connections']} connections, {w['seconds']:g} s, POST a message):",
        f"  bare FastAPI endpoint:          {closed('bare')}",
        f"  one DAC adapter (edge alone):   {closed('adapter')}",
        f"  adapter / bare:                 {f['adapter_to_bare']:>10.2f}x (target >= 0.5x)",
        *([f"  same, JWT access token:         {closed('adapter_jwt')}",
           f"  JWT / static token:             {f['adapter_jwt_to_static']:>10.2f}x (target >= 0.9x)"] if "adapter_jwt_to_static" in f else []),
        f"  same, processor consuming:      {closed('adapter_with_processor')}",
        f"  adapter / bare:                 {f['adapter_with_processor_to_bare']:>10.2f}x (the broker and processor share the 2 cores)",
        *_cpu_report(f),
        (f"HTTP edge, open loop ({f['open_rate_target']:g} POSTs/s scheduled, {f['open_requests']:,} requests; "
         f"sent {f['open_sent_per_s']:,.0f}/s, send lag p99 {f['open_send_lag_p99_ms']:.1f} ms, {f['open_connections']} connections):"),
        (f"  scheduled send -> 202:          p50 {f['open_post_p50_ms']:.1f} ms, p99 {f['open_post_p99_ms']:.1f} ms, "
         f"max {f['open_post_max_ms']:.1f} ms; p99 per 10 s: {', '.join(f'{v:g}' for v in f['open_post_p99_ms_per_10s'])}"),
        (f"  202 -> item in views.dac-31:    p50 {f['open_view_p50_ms']:.1f} ms, p99 {f['open_view_p99_ms']:.1f} ms, "
         f"max {f['open_view_max_ms']:.1f} ms (target p99 <= 50 ms)"),
        (f"  {f['open_accepted']:,} accepted; {f['open_errors']} errors, {f['open_non_202']} non-202, "
         f"{f['open_unseen_in_view']} accepted but not in the view" + ("" if problems else " (none)")),
        *([] if kept_schedule(f) else [(
            f"  NOT VALID: the load generator fell behind its schedule (sent {f['open_sent_per_s']:,.0f} of "
            f"{f['open_rate_target']:g}/s, send lag p99 {f['open_send_lag_p99_ms']:,.0f} ms): the machine could not drive "
            "this rate, and the latencies above measure the generator's own delay as much as the edge's "
            "(a view seen before its 202 was read gives a negative figure)")]),
    ]


def _cpu_report(f: dict[str, Any]) -> list[str]:
    cpu = f.get("system_cpu_us_per_post")
    if not cpu:
        return []
    total = sum(cpu.values())
    cores = os.cpu_count() or 1
    return [
        "  CPU per accepted POST, same run: " + ", ".join(f"{name} {us:,.0f} µs" for name, us in cpu.items()),
        (f"  = {total / 1000:.2f} ms of CPU per POST: {cores} cores at 100% carry at most {cores / total * 1e6:,.0f} POSTs/s "
         "end to end (edge, processor, broker)"),
    ]


#: how far behind its schedule the open loop may send and still measure the edge, not itself
OPEN_LOOP_MAX_LAG_MS = 100.0


def kept_schedule(f: dict[str, Any]) -> bool:
    """Did the open loop send at its rate, on time? Otherwise its latencies are not the edge's."""
    sent, rate, lag = float(f["open_sent_per_s"]), float(f["open_rate_target"]), float(f["open_send_lag_p99_ms"])
    return sent >= 0.95 * rate and lag <= OPEN_LOOP_MAX_LAG_MS
