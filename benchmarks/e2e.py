"""`python -m benchmarks.e2e --messages 20000 --json out.json`: issue 7's benchmark in one run.

Provisions a dedicated pair of vhosts (`bench-<random>-tj`, `bench-<random>-ru`) with the shovels
between them, runs raw aio-pika, FastStream and the signed pipeline over the same path one after
the other, measures the audit log, prints a table, writes JSON and deletes the vhosts and users.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from benchmarks.auditlog import cached_log, inclusion_proof_ms, verify_entries_per_s
from benchmarks.baselines import faststream_installed, faststream_leg, raw_latency_leg, raw_leg
from benchmarks.common import CpuMeter, LinkUrls, LoadShape
from benchmarks.events import EventClock, install_event_clock
from benchmarks.floor import broker_costs_us, crypto_costs_us, price
from benchmarks.http_leg import http_vs_send
from benchmarks.pipeline import latency_leg, start_link, throughput_leg
from benchmarks.report import percentile, print_table, ratio
from broker.exchange import runtime
from broker.exchange.devkit import provision_dev_exchange

DEFAULT_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "labour-exchange-bench"


@dataclass(frozen=True, kw_only=True)
class Options:
    messages: int
    latency_messages: int
    rate_per_s: float
    steady_rate_per_s: float
    in_flight: int
    prefetch: int
    skip_faststream: bool
    proof_log_size: int
    cache_dir: Path
    timeout_s: float
    http_messages: int
    http_in_flight: int


async def _broker_legs(
    options: Options, workdir: Path, events: EventClock
) -> tuple[dict[str, object], list[str]]:
    shape = LoadShape(messages=options.messages, in_flight=options.in_flight, prefetch=options.prefetch)
    warm_up = LoadShape(
        messages=min(500, options.messages), in_flight=options.in_flight, prefetch=options.prefetch
    )
    notes: list[str] = []
    dev = await provision_dev_exchange(
        workdir, vhost_prefix=f"bench-{secrets.token_hex(3)}-", prefetch=options.prefetch
    )
    try:
        urls = LinkUrls(sender=dev.gateway_url("TJ"), receiver=dev.gateway_url("RU"))
        await raw_leg(urls=urls, shape=warm_up, timeout_s=options.timeout_s)
        # The primitives' prices, measured alone at the start of the run (`benchmarks.floor`).
        costs_us = crypto_costs_us() | await broker_costs_us(
            urls=urls, count=2000, in_flight=options.in_flight, prefetch=options.prefetch
        )
        raw_meter = CpuMeter()
        raw = await raw_leg(urls=urls, shape=shape, timeout_s=options.timeout_s)
        raw_client_cpu, _, raw_broker_cpu = raw_meter.per_1k(shape.messages)
        raw_steady = await raw_latency_leg(
            urls=urls,
            messages=min(options.latency_messages, int(options.steady_rate_per_s * 10)),
            rate_per_s=options.steady_rate_per_s,
            prefetch=options.prefetch,
            timeout_s=options.timeout_s,
        )
        faststream: float | None = None
        if options.skip_faststream or not faststream_installed():
            notes.append("faststream leg skipped (--skip-faststream or faststream[rabbit] not installed)")
        else:
            faststream = await faststream_leg(urls=urls, shape=shape, timeout_s=options.timeout_s)
        link = await start_link(dev, events)
        try:
            pipeline = await throughput_leg(link, shape=shape, timeout_s=options.timeout_s)
            latency = await latency_leg(
                link,
                messages=options.latency_messages,
                rate_per_s=options.rate_per_s,
                timeout_s=options.timeout_s,
            )
            steady = await latency_leg(
                link,
                messages=min(options.latency_messages, int(options.steady_rate_per_s * 10)),
                rate_per_s=options.steady_rate_per_s,
                timeout_s=options.timeout_s,
            )
            # And at a rate the pipeline sustains on this machine: half what it just measured.
            sustained_rate = max(1.0, pipeline.msgs_per_s / 2)
            sustained = await latency_leg(
                link,
                messages=min(options.latency_messages, int(sustained_rate * 10)),
                rate_per_s=sustained_rate,
                timeout_s=options.timeout_s,
            )
            http = await http_vs_send(
                link,
                dev,
                workdir,
                messages=options.http_messages,
                in_flight=options.http_in_flight,
                timeout_s=options.timeout_s,
            )
        finally:
            await link.close()
    finally:
        dev.teardown()
    floor = price(costs_us, pipeline.operations, options.messages)
    result: dict[str, object] = {
        "raw_msgs_per_s": raw,
        "faststream_msgs_per_s": faststream,
        "pipeline_msgs_per_s": pipeline.msgs_per_s,
        "ratio_vs_raw": ratio(pipeline.msgs_per_s, raw),
        "ratio_vs_faststream": ratio(pipeline.msgs_per_s, faststream),
        "p50_ms": percentile(latency.audited_ms, 50),
        "p99_ms": percentile(latency.audited_ms, 99),
        "receipt_p99_ms": percentile(latency.receipt_ms, 99),
        "cpu_s_per_1k": pipeline.cpu_s_per_1k,
        "peak_rss_mb": pipeline.peak_rss_mb,
        # Beyond the keys: where the CPU goes, and latency at a load the pipeline sustains.
        "raw_client_cpu_s_per_1k": raw_client_cpu,
        "raw_broker_cpu_s_per_1k": raw_broker_cpu,
        "sender_cpu_s_per_1k": pipeline.sender_cpu_s_per_1k,
        "receiver_cpu_s_per_1k": pipeline.receiver_cpu_s_per_1k,
        "pipeline_broker_cpu_s_per_1k": pipeline.broker_cpu_s_per_1k,
        "steady_rate_per_s": options.steady_rate_per_s,
        "steady_p50_ms": percentile(steady.audited_ms, 50),
        "steady_p99_ms": percentile(steady.audited_ms, 99),
        "steady_receipt_p99_ms": percentile(steady.receipt_ms, 99),
        "raw_steady_p50_ms": percentile(raw_steady, 50),
        "raw_steady_p99_ms": percentile(raw_steady, 99),
        "sustained_rate_per_s": sustained_rate,
        "sustained_p50_ms": percentile(sustained.audited_ms, 50),
        "sustained_p99_ms": percentile(sustained.audited_ms, 99),
        "sustained_receipt_p99_ms": percentile(sustained.receipt_ms, 99),
        # The floor the design sets, priced in this run, beside what both gateways spent.
        "floor_ms_per_msg": floor.ms_per_msg,
        "ours_ms_per_msg": pipeline.cpu_s_per_1k,
        "ours_vs_floor": pipeline.cpu_s_per_1k / floor.ms_per_msg,
        "primitive_costs_us": costs_us,
        "primitives_per_msg": floor.counts_per_msg,
        # The HTTP API (issue 15): submissions through it against Gateway.send, same gateway, same run.
        "http_submissions_per_s": http.http_submissions_per_s,
        "gateway_send_per_s": http.gateway_send_per_s,
        "http_vs_send_ratio": http.ratio,
        "http_messages": options.http_messages,
        "http_in_flight": options.http_in_flight,
    }
    return result, notes


def run(options: Options, events: EventClock) -> dict[str, object]:
    workdir = Path(tempfile.mkdtemp(prefix="bench-e2e-"))
    try:
        # Every leg on the loop the gateways run on (uvloop where installed): like for like.
        loop = runtime.use_fast_event_loop()
        result, notes = asyncio.run(_broker_legs(options, workdir, events))
        result["event_loop"] = loop
        receiver_log = workdir / "ru" / "audit.sqlite"
        cores = os.cpu_count() or 1
        verify_rate, verified = verify_entries_per_s(receiver_log)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    proof_log = cached_log(options.cache_dir, options.proof_log_size)
    result |= {
        "verify_entries_per_s": verify_rate,
        "inclusion_proof_ms_at_1m": inclusion_proof_ms(proof_log),
        "faststream_skipped": result["faststream_msgs_per_s"] is None,
        "messages": options.messages,
        "latency_messages": options.latency_messages,
        "offered_rate_per_s": options.rate_per_s,
        "in_flight": options.in_flight,
        "prefetch": options.prefetch,
        "cores": cores,
        "verify_entries_per_s_per_core": verify_rate / cores,
        "verified_entries": verified,
        "proof_log_size": options.proof_log_size,
        "notes": [
            *notes,
            "pipeline: publish to receipt recorded at the sender; raw and faststream: publish to ack at the receiver",
            "p50/p99: gateway send started -> RECEIVED entry durable in the receiver's audit log",
            "cpu_s_per_1k: both gateway processes together (split in sender_/receiver_cpu_s_per_1k); "
            "peak_rss_mb: the larger of the two; *_broker_cpu_s_per_1k: RabbitMQ's own CPU, when it runs here",
            "floor_ms_per_msg: primitive_costs_us (measured alone at the start) x primitives_per_msg (counted "
            "in both gateways during the throughput leg); ours_ms_per_msg: both gateways' CPU per message",
            "steady_*: latency at --steady-rate; sustained_*: at half the pipeline's measured throughput",
            "http_vs_send_ratio: submissions/s through `broker api serve` (a process of its own, 202 once the "
            "gateway accepted) over Gateway.send/s in this process, same gateway, --http-in-flight at once",
        ],
    }
    return result


def _parse(argv: list[str] | None) -> tuple[Options, Path | None]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.e2e", description=__doc__)
    parser.add_argument("--messages", type=int, default=20_000, help="messages per throughput leg")
    parser.add_argument("--latency-messages", type=int, default=None, help="default: min(messages, 5000)")
    parser.add_argument("--rate", type=float, default=500.0, help="offered load of the latency leg, msg/s")
    parser.add_argument(
        "--steady-rate", type=float, default=100.0, help="offered load of a second latency leg, msg/s"
    )
    parser.add_argument("--in-flight", type=int, default=256, help="unconfirmed publishes at once, every leg")
    parser.add_argument("--prefetch", type=int, default=256, help="consumer prefetch, every leg")
    parser.add_argument("--skip-faststream", action="store_true", help="record faststream as null")
    parser.add_argument("--proof-log-size", type=int, default=1_000_000, help="entries of the proof log")
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE, help="where the proof log is kept")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds any one leg may take")
    parser.add_argument(
        "--http-messages", type=int, default=None, help="HTTP leg; default: min(messages, 2000)"
    )
    parser.add_argument(
        "--http-in-flight", type=int, default=64, help="submissions at once, HTTP and send legs"
    )
    parser.add_argument("--json", type=Path, default=None, help="write the result here")
    args = parser.parse_args(argv)
    options = Options(
        messages=args.messages,
        latency_messages=args.latency_messages or min(args.messages, 5000),
        rate_per_s=args.rate,
        steady_rate_per_s=args.steady_rate,
        in_flight=args.in_flight,
        prefetch=args.prefetch,
        skip_faststream=args.skip_faststream,
        proof_log_size=args.proof_log_size,
        cache_dir=args.cache_dir,
        timeout_s=args.timeout,
        http_messages=args.http_messages or min(args.messages, 2000),
        http_in_flight=args.http_in_flight,
    )
    return options, args.json


def main(argv: list[str] | None = None) -> None:
    options, json_path = _parse(argv)
    result = run(options, install_event_clock())
    print_table(result, cores=int(str(result["cores"])))
    if json_path is not None:
        json_path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
