"""The ``mis replay | backfill | republish | verify`` subcommands; the work is in their modules.

The modules are imported when their command runs, so that ``mis worker`` does not load them.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable
from typing import Any

from streams.config import get_settings
from streams.errors import PipelineError


def _run(
    command: str,
    work: Callable[[], int],
    *,
    interrupted: str | None = None,
    errors: tuple[type[Exception], ...] = (PipelineError,),
) -> int:
    """``mis <command>``'s exit status: ``work``'s, 2 on one of ``errors`` (said on stderr),
    130 on Ctrl-C where ``interrupted`` says what it leaves behind."""
    try:
        return work()
    except errors as exc:
        print(f"mis {command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if interrupted is None:
            raise
        print(f"mis {command}: interrupted; {interrupted}", file=sys.stderr)
        return 130


def _replay(args: argparse.Namespace) -> int:
    from streams.ops import replay

    def work() -> int:
        positions = dict(replay.parse_position(p) for p in args.to_offset or [])
        if args.to_earliest:
            mode: replay.Mode = "earliest"
        elif args.to_datetime:
            mode = "datetime"
        else:
            mode = "offsets"
        request = replay.ReplayRequest(
            mode=mode,
            at=replay.parse_time(args.to_datetime) if args.to_datetime else None,
            positions=positions,
            rebuild=args.rebuild_tables,
            wait=not args.no_wait,
            dry_run=args.dry_run,
            timeout_s=args.timeout,
        )
        return replay.main(get_settings(), request)

    return _run("replay", work, interrupted="the offsets stay where they were moved")


def _backfill(args: argparse.Namespace) -> int:
    from streams.ops import backfill

    request = backfill.BackfillRequest(
        tables=tuple(args.tables),
        where=args.where,
        wait=not args.no_wait,
        timeout_s=args.timeout,
        connector=args.connector,
    )
    return _run(
        "backfill",
        lambda: backfill.main(get_settings(), request),
        interrupted="Debezium goes on with the snapshot",
    )


def _republish(args: argparse.Namespace) -> int:
    from streams.ops import republish

    return _run(
        "republish",
        lambda: asyncio.run(
            republish.main(get_settings(), source=args.source, batch_size=args.batch_size)
        ),
        interrupted="run it again to finish",
    )


def _verify(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime, timedelta
    from uuid import UUID

    from streams.ops import replay, verify

    def work() -> int:
        now = replay.parse_time(args.now) if args.now else datetime.now(UTC)
        scope = verify.Scope(
            farmers=frozenset(UUID(f) for f in args.farmer) if args.farmer else None,
            bookings=frozenset(UUID(b) for b in args.booking) if args.booking else None,
        )
        grace = None if args.grace is None else timedelta(seconds=args.grace)
        return verify.main(get_settings(), now=now, scope=scope, grace=grace)

    return _run("verify", work, errors=(ValueError, PipelineError))


def add_ops_commands(sub: Any) -> None:
    """Add the operators' subcommands to the ``mis`` parser's subparsers."""
    r = sub.add_parser(
        "replay",
        help="move the pipeline's consumer group back and follow the workers as they replay",
        description="Move the consumer group (MIS_APP_ID) on the CDC topics, optionally "
        "rebuilding the join tables, then wait for the workers to catch up. Refused while "
        "workers run.",
    )
    where = r.add_mutually_exclusive_group(required=True)
    where.add_argument("--to-earliest", action="store_true", help="the earliest offsets")
    where.add_argument("--to-datetime", metavar="TIME", help="ISO 8601, UTC if no zone")
    where.add_argument(
        "--to-offset",
        metavar="TOPIC:PARTITION:OFFSET",
        action="append",
        help="an explicit position of any pipeline topic (repeat it)",
    )
    r.add_argument(
        "--rebuild-tables",
        action="store_true",
        help="empty the join tables and rebuild them from the CDC history (with --to-earliest)",
    )
    r.add_argument("--dry-run", action="store_true", help="show the plan, move nothing")
    r.add_argument("--no-wait", action="store_true", help="move the offsets and exit")
    r.add_argument("--timeout", type=float, default=3600.0, help="seconds to wait (3600)")
    r.set_defaults(fn=_replay)

    b = sub.add_parser(
        "backfill",
        help="re-read source rows through Debezium incremental snapshots and wait for them",
        description="Insert an execute-snapshot signal (type incremental) into the signal "
        "table and follow the connector's notifications until the snapshot completes.",
    )
    b.add_argument("tables", nargs="+", metavar="TABLE", help="e.g. storage_bookings")
    b.add_argument("--where", metavar="SQL", help="only the rows matching this condition")
    b.add_argument("--connector", help="connector name (default: connectors/*.json's)")
    b.add_argument("--no-wait", action="store_true", help="send the signal and exit")
    b.add_argument("--timeout", type=float, default=1800.0, help="seconds to wait (1800)")
    b.set_defaults(fn=_backfill)

    p = sub.add_parser(
        "republish",
        help="rewrite every MongoDB listing from Postgres or from the snapshot topic",
        description="Rewrite the market listings of a wiped or new MongoDB.",
    )
    p.add_argument(
        "--from",
        dest="source",
        choices=("postgres", "topic"),
        default="postgres",
        help="market_inventory_snapshots (default) or the compacted <app>-snapshots topic",
    )
    p.add_argument("--batch-size", type=int, default=500)
    p.set_defaults(fn=_republish)

    v = sub.add_parser(
        "verify",
        help="compare every snapshot row and listing with a recomputation from the source tables",
        description="Recompute every snapshot from the five source tables (SQL, not the "
        "pipeline's builder) and report, per booking, rows and listings that are lost, "
        "regressed (with the fields that differ) or extra. Exits 1 when anything differs.",
    )
    v.add_argument("--now", metavar="TIME", help="evaluate at this time (ISO 8601; default now)")
    v.add_argument(
        "--grace",
        type=float,
        metavar="SECONDS",
        help="how long a time-driven change may wait for a tick (default 3 ticks + 10 s)",
    )
    v.add_argument("--farmer", action="append", metavar="UUID", help="only these farmers")
    v.add_argument("--booking", action="append", metavar="UUID", help="only these bookings")
    v.set_defaults(fn=_verify)
