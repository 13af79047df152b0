"""`python -m launcher up|down|status|logs` (also installed as `mis-stack`)."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Sequence
from types import FrameType

from launcher.errors import StackError
from launcher.stack import NAMES, Stack, tail
from streams.config import Settings

log = logging.getLogger(__name__)

#: `status` exit code when something is not healthy (the LSB code for "not running")
NOT_RUNNING = 3


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mis-stack",
        description="Local Postgres, Kafka, Kafka Connect + Debezium and FerretDB as processes.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("up", help="start the stack and register the connectors")
    down = sub.add_parser("down", help="stop what `up` started")
    down.add_argument("--purge", action="store_true", help="also remove the state directory")
    sub.add_parser("status", help=f"health, pid, port and memory; exit {NOT_RUNNING} if unhealthy")
    stop = sub.add_parser("stop", help="stop one component, keeping its data")
    stop.add_argument("component", choices=NAMES)
    stop.add_argument("--kill", action="store_true", help="SIGKILL instead of a clean shutdown")
    start = sub.add_parser("start", help="start a stopped component again on its data")
    start.add_argument("component", choices=NAMES)
    logs = sub.add_parser("logs", help="show the end of a component's log")
    logs.add_argument("component", nargs="?", choices=NAMES)
    logs.add_argument("-n", "--lines", type=int, default=40)
    logs.add_argument("-f", "--follow", action="store_true")
    return parser


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    # A SIGTERM (CI timeout, `kill`) must unwind like Ctrl-C so `up` stops what it started.
    signal.signal(signal.SIGTERM, _interrupt)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(message)s" if not args.verbose else "%(asctime)s %(name)s %(message)s",
    )
    # librdkafka's retries while a broker is still starting are expected noise.
    logging.getLogger("rdkafka").setLevel(logging.CRITICAL)
    stack = Stack.from_settings(Settings())
    try:
        if args.command == "up":
            took = stack.up()
            if took:
                log.info("stack up in %.1fs (state in %s)", took, stack.paths.state)
            return 0
        if args.command == "down":
            stopped = stack.down(purge=args.purge)
            log.info("stack down (%s)", ", ".join(stopped) if stopped else "nothing was running")
            return 0
        if args.command == "status":
            return _status(stack)
        if args.command == "stop":
            stack.stop_component(args.component, kill=args.kill)
            return 0
        if args.command == "start":
            log.info("%s healthy in %.1fs", args.component, stack.start_component(args.component))
            return 0
        return _logs(stack, args.component, args.lines, args.follow)
    except StackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _mib(n: int | None) -> str:
    return "-" if n is None else f"{n / 2**20:.0f} MiB"


def _status(stack: Stack) -> int:
    rows = stack.status()
    print(f"{'component':<10} {'pid':>7} {'port':>6} {'rss':>9} {'peak rss':>9}  state")
    for r in rows:
        pid = str(r.pid) if r.pid else "-"
        print(
            f"{r.name:<10} {pid:>7} {r.port:>6} {_mib(r.rss_bytes):>9} "
            f"{_mib(r.peak_bytes):>9}  {r.state}"
        )
    ok = all(r.healthy for r in rows)
    if any(r.name == "connect" and r.healthy for r in rows):
        for name, state, tasks in stack.connector_states():
            print(f"connector {name}: {state}, tasks {tasks}")
            ok = ok and state == "RUNNING" and bool(tasks) and all(t == "RUNNING" for t in tasks)
    else:
        ok = False
    return 0 if ok else NOT_RUNNING


def _logs(stack: Stack, component: str | None, lines: int, follow: bool) -> int:
    names = [component] if component else list(NAMES)
    files = [stack.paths.log_file(n) for n in names]
    if follow:
        existing = [str(f) for f in files if f.exists()]
        if not existing:
            raise StackError(f"no logs under {stack.paths.logs}: is the stack up?")
        os.execvp("tail", ["tail", "-n", str(lines), "-F", *existing])
    for name, path in zip(names, files, strict=True):
        if len(names) > 1:
            print(f"==> {name} ({path}) <==")
        for line in tail(path, lines):
            print(line)
    return 0
