"""Drawing the watch's figures: a live view on a terminal (rich), a line every few seconds when
the output is not one."""

from __future__ import annotations

import os
import shutil
import sys
import time
from datetime import datetime
from pathlib import Path

from confluent_kafka import KafkaException
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from streams.config import Settings
from streams.ops.errors import OpsError
from streams.watch.model import (
    STAGES,
    ChangeRow,
    Figures,
    count_text,
    delay_text,
    rate_text,
)
from streams.watch.source import WatchSource

REFRESH_HZ = 4
LINE_EVERY_S = 5.0
STAGE_TITLES = {"snapshot": "→ snapshot", "postgres": "→ Postgres", "mongodb": "→ MongoDB"}
STATE_STYLES = {"done": "green", "partial": "yellow", "waiting": "dim", "none": "dim"}


def touch_command(settings: Settings) -> str:
    """How to write a change from another shell, as the user would type it there."""
    here = Path(sys.prefix) / "bin" / "mis"
    if shutil.which("mis") == str(here) or not here.exists():
        mis = "mis"
    else:
        try:
            mis = str(here.relative_to(Path.cwd()))
        except ValueError:
            mis = str(here)
    default = Settings.model_fields["pg_port"].default
    env = f"MIS_PG_PORT={settings.pg_port} " if settings.pg_port != default else ""
    return f"{env}{mis} demo --touch"


def _clock(at: datetime) -> str:
    return at.astimezone().strftime("%H:%M:%S.%f")[:-3]


def lag_text(lag: dict[str, int] | None, app_id: str) -> str:
    """The messages the groups have yet to commit, in all and per group when there are several
    (``<app>`` is the pipeline's, ``<app>-sink-postgres`` a sink's, shown as ``sink-postgres``)."""
    if not lag:
        return "-"
    text = f"{sum(lag.values()):,} messages"
    if len(lag) > 1:
        names = {g: "pipeline" if g == app_id else g.removeprefix(app_id + "-") for g in lag}
        text += " (" + ", ".join(f"{names[g]} {n:,}" for g, n in lag.items()) + ")"
    return text


def _changes(rows: list[ChangeRow]) -> Table:
    table = Table(
        title="recent changes: delay from the commit",
        title_justify="left",
        expand=True,
        box=None,
        padding=(0, 1, 0, 0),
    )
    table.add_column("committed", no_wrap=True)
    table.add_column("op", no_wrap=True)
    # The summary names what changed (a reading, a booking, ...): no column for the table.
    table.add_column("change", overflow="ellipsis", no_wrap=True, ratio=1)
    table.add_column("bookings", justify="right", no_wrap=True)
    for stage in STAGES:
        table.add_column(STAGE_TITLES[stage], justify="right", no_wrap=True)
    for r in rows:
        cells = [Text(delay_text(*r.delays[s]), style=STATE_STYLES[r.delays[s][1]]) for s in STAGES]
        table.add_row(_clock(r.committed_at), r.op, r.summary, str(r.bookings), *cells)
    if not rows:
        table.add_row("", "", Text("no change committed since the watch started", "dim"))
    return table


def render(f: Figures, settings: Settings, problems: dict[str, str], hint: str) -> RenderableType:
    head = Text.assemble(
        ("mis watch", "bold"),
        f"  {settings.app_id}  since {_clock(f.started_at)[:8]}  ",
        (
            f"Kafka {settings.kafka_bootstrap}  Postgres :{settings.pg_port}  "
            f"MongoDB :{settings.mongo_port}",
            "dim",
        ),
    )
    counts = Table.grid(padding=(0, 2))
    for _ in range(4):
        counts.add_column()
    counts.add_row(
        "source changes captured",
        Text(f"{count_text(f.changes)}  {rate_text(f.changes_per_s)}", "bold"),
        "consumer lag",
        Text(lag_text(f.consumer_lag, settings.app_id), "bold"),
    )
    dead = count_text(f.dead_letters)
    if f.dead_letters_new:
        dead += f" ({f.dead_letters_new:,} new)"
    counts.add_row(
        "snapshots emitted",
        Text(f"{count_text(f.snapshots)}  {rate_text(f.snapshots_per_s)}", "bold"),
        "dead letters",
        Text(dead, "bold red" if f.dead_letters_new else "bold"),
    )
    counts.add_row(
        "rows written (Postgres)",
        Text(count_text(f.rows_written), "bold"),
        "snapshot rows",
        Text(count_text(f.rows), "bold"),
    )
    counts.add_row("listings written (MongoDB)", Text(count_text(f.listings_written), "bold"))
    parts: list[RenderableType] = [head, Text(), counts, Text(), _changes(f.recent), Text()]
    for what, problem in problems.items():
        parts.append(Text(f"{what}: {problem}", "red"))
    parts.append(
        Text.assemble(
            "Write a change from another shell: ", (hint, "bold cyan"), "    Ctrl-C stops"
        )
    )
    return Group(*parts)


def line(f: Figures, problems: dict[str, str], app_id: str) -> str:
    """The figures on one line, for output that is not a terminal."""
    text = (
        f"watch: changes {count_text(f.changes)}, snapshots {count_text(f.snapshots)}, "
        f"rows written {count_text(f.rows_written)}, listings written "
        f"{count_text(f.listings_written)}, consumer lag {lag_text(f.consumer_lag, app_id)}, "
        f"dead letters {count_text(f.dead_letters)}"
    )
    if f.recent:
        r = f.recent[0]
        delays = ", ".join(f"{s} {delay_text(*r.delays[s])}" for s in STAGES)
        text += f"; last: {r.table} {r.op} {r.summary}: {delays}"
    for what, problem in problems.items():
        text += f"; {what}: {problem}"
    return text


def _alive(pid: int | None) -> bool:
    if pid is None:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _gone(pid: int | None) -> int:
    print(f"mis watch: process {pid} is gone, stopping", file=sys.stderr)
    return 0


def run(settings: Settings, while_pid: int | None = None) -> int:
    """Until Ctrl-C (130), or until process ``while_pid`` is gone (0)."""
    console = Console()
    try:
        source = WatchSource(settings)
    except (OpsError, KafkaException) as exc:
        print(f"mis watch: {exc}", file=sys.stderr)
        return 2
    hint = touch_command(settings)
    try:
        if not console.is_terminal:
            next_line = 0.0
            while _alive(while_pid):
                figures = source.poll()
                if time.monotonic() >= next_line:
                    next_line = time.monotonic() + LINE_EVERY_S
                    print(line(figures, source.problems, settings.app_id), flush=True)
            return _gone(while_pid)
        with Live(
            render(source.poll(0.0), settings, source.problems, hint),
            console=console,
            auto_refresh=False,
            # The view is redrawn in place; taller than the terminal, it is cut at the bottom.
            vertical_overflow="crop",
        ) as live:
            next_draw = 0.0
            while _alive(while_pid):
                figures = source.poll(1 / REFRESH_HZ / 2)
                if time.monotonic() >= next_draw:
                    next_draw = time.monotonic() + 1 / REFRESH_HZ
                    live.update(render(figures, settings, source.problems, hint), refresh=True)
        return _gone(while_pid)
    except KeyboardInterrupt:
        return 130
    finally:
        source.close()
