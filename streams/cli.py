"""The project\'s command line: ``mis worker | sink | demo | watch | verify | token | ...``."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from pathlib import Path

from streams.config import Settings, get_settings
from streams.ops.commands import add_ops_commands


def _tune_memory(settings: Settings) -> None:
    """Run with jemalloc (MIS_ALLOCATOR), or tune glibc's malloc (streams.runtime.memory)."""
    from streams.runtime import memory

    try:
        memory.start_with(settings.allocator)
    except memory.AllocatorMissing as exc:
        raise SystemExit(f"mis: {exc}") from None
    memory.tune(settings.malloc_arenas, settings.malloc_trim_s, settings.malloc_mmap_threshold_kb)


def _worker(args: argparse.Namespace) -> int:
    from streams.admin import ensure_sink_table, ensure_topics
    from streams.api.auth import Tokens
    from streams.errors import PipelineError
    from streams.runtime import build

    try:
        settings = get_settings()
        _tune_memory(settings)
        if args.loglevel:
            settings = settings.model_copy(update={"log_level": args.loglevel.lower()})
        Tokens(settings)  # refuse to start on a token entry that cannot be used
        ensure_topics(settings)
        ensure_sink_table(settings)
        rt = build(settings, web=True)
    except PipelineError as exc:
        print(f"mis worker: {exc}", file=sys.stderr)
        return 2

    from streams.runtime import memory

    memory.start(settings.worker_data_dir)
    level = settings.log_level.lower().replace("warning", "warn")
    sys.argv = ["mis worker", "worker", "-l", level]
    rt.app.main()  # exits


def _cleanup(args: argparse.Namespace) -> int:
    from streams.agents import timers
    from streams.runtime import build

    rt = build(get_settings(), agents=False)

    async def run() -> timers.Cleaned:
        await rt.app.producer.start()
        try:
            return await timers.cleanup(rt)
        finally:
            await rt.app.producer.stop()

    cleaned = asyncio.run(run())
    print(f"cleanup: evicting {cleaned.evicted} completed or withdrawn snapshots")
    if cleaned.pruned is None:
        print("cleanup: history kept (MIS_HISTORY_KEEP_DAYS=0)")
    else:
        print(f"cleanup: {cleaned.pruned} history versions pruned")
    return 0


def _token_create(args: argparse.Namespace) -> int:
    import secrets
    from datetime import UTC, datetime

    from streams.api.auth import SCOPES, TOKEN_NAME, entry, new_token

    scopes = {s.strip() for s in args.scopes.split(",") if s.strip()}
    if not scopes or scopes - SCOPES:
        print(f"mis token create: --scopes is some of {','.join(sorted(SCOPES))}", file=sys.stderr)
        return 2
    name = args.name or f"api-{datetime.now(UTC):%Y%m%d}-{secrets.token_hex(2)}"
    if not TOKEN_NAME.fullmatch(name):
        print("mis token create: --name is 1-64 letters, digits, '.', '_', '-'", file=sys.stderr)
        return 2
    token = new_token()
    line = entry(name, token, scopes)
    print(
        "The token (line 1) is shown once: give it to the caller, who sends it as\n"
        "'Authorization: Bearer <token>'. The worker keeps only its SHA-256 (line 2): add that\n"
        "line to MIS_API_TOKENS (entries separated by spaces) or to MIS_API_TOKENS_FILE.",
        file=sys.stderr,
    )
    print(token)
    print(line)
    return 0


def _sink(args: argparse.Namespace) -> int:
    import signal
    import threading

    from streams.admin import ensure_sink_table
    from streams.errors import PipelineError
    from streams.sinks.follower import sink_threads
    from streams.sinks.processes import METRICS_FILE_ENV, stop_when_orphaned, write_metrics_while

    settings = get_settings()
    _tune_memory(settings)
    try:
        ensure_sink_table(settings)
    except PipelineError as exc:
        print(f"mis sink: {exc}", file=sys.stderr)
        return 2
    threads = sink_threads(settings, args.only or ("postgres", "mongodb"))
    stopped = threading.Event()
    # A handler runs in the main thread between two bytecodes, possibly inside the lock of an
    # Event it waits on or sets, and that lock is not reentrant: a handler calling
    # stopped.set() there (a second SIGTERM while the first one's set() ran) deadlocked the
    # process for good. The handler only records the signal; the main thread sets ``stopped``.
    signalled: list[int] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, _: signalled.append(signum))
    threads.start()
    writer = None
    if os.environ.get(METRICS_FILE_ENV):  # a worker's child: its metrics go to the worker
        path = Path(os.environ[METRICS_FILE_ENV])
        writer = threading.Thread(
            target=write_metrics_while, args=(stopped, path), name="metrics", daemon=True
        )
        writer.start()
        # The kernel's parent-death signal (streams.sinks.processes) misses a worker that died
        # between the fork and the prctl: a child whose parent changed stops all the same.
        threading.Thread(
            target=stop_when_orphaned, args=(stopped, os.getppid()), name="parent", daemon=True
        ).start()
    while not signalled and not stopped.wait(0.2):
        pass
    stopped.set()
    threads.stop()
    if writer is not None:
        writer.join(5)
    # The followers had their grace (threads.stop); a Kafka client or a MongoDB pool still
    # blocked on a server that went away must not keep the process alive at exit.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _demo(args: argparse.Namespace) -> int:
    from streams import demo

    if args.touch:
        return demo.run_touch(get_settings())
    return demo.run(get_settings(), rows=args.bookings, watch_s=args.watch)


def _watch(args: argparse.Namespace) -> int:
    from streams.watch import view

    return view.run(get_settings(), while_pid=args.while_pid)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mis", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    w = sub.add_parser("worker", help="run a Faust worker of the pipeline")
    w.add_argument("-l", "--loglevel", default=None, help="default: MIS_LOG_LEVEL (info)")
    w.set_defaults(fn=_worker)
    s = sub.add_parser(
        "sink",
        help="run the sinks in this process (set MIS_SINKS= on workers that should not)",
    )
    s.add_argument("--only", action="append", choices=("postgres", "mongodb"), help="default: both")
    s.set_defaults(fn=_sink)
    d = sub.add_parser("demo", help="load demo data and show the snapshots it produced")
    d.add_argument("--bookings", type=int, default=5)
    d.add_argument("--watch", type=float, default=30.0, help="seconds to wait for snapshots")
    d.add_argument(
        "--touch",
        action="store_true",
        help="instead: insert one sensor reading at the latest booking's location",
    )
    d.set_defaults(fn=_demo)
    v = sub.add_parser(
        "watch", help="live view: changes arriving, snapshots, sink writes, delays, lag"
    )
    v.add_argument(
        "--while-pid",
        type=int,
        metavar="PID",
        help="stop when process PID exits (make run passes its worker's)",
    )
    v.set_defaults(fn=_watch)
    c = sub.add_parser("cleanup", help="delete finished snapshots older than the retention")
    c.set_defaults(fn=_cleanup)
    t = sub.add_parser("token", help="API bearer tokens").add_subparsers(
        dest="token_command", required=True
    )
    tc = t.add_parser("create", help="print a new token once, and its configuration line")
    tc.add_argument("--name", default=None, help="shown in logs; default: api-<date>-<random>")
    tc.add_argument("--scopes", required=True, help="comma-separated: read,publish,operate,metrics")
    tc.set_defaults(fn=_token_create)
    add_ops_commands(sub)  # replay, backfill, republish, verify (streams.ops)
    args = parser.parse_args(argv)
    # The live view owns the terminal: only warnings go to stderr meanwhile.
    level = logging.WARNING if args.command == "watch" else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    return int(args.fn(args))


if __name__ == "__main__":
    sys.exit(main())
