"""The conflation window under load. Pure: no Faust, no I/O.

A key's messages are conflated over a window (streams.conflate): under a storm the work is up
to keys / window a second whatever the rate of changes, at every hop after it and in the sinks.
A fixed window that is too short for the machine leaves more work than the worker can do: the
messages wait longer and longer for their agent, and the delay grows with the storm.

``Pace`` widens the window while the worker is behind. Each batch reports how long its oldest
message waited for the agent (its *lag*: the batch's start minus the message's Kafka
timestamp). The window is that lag, smoothed, between ``base`` and ``widest``: a message that
has already waited a second is not made much later by a window of a second, while the work
the window saves lets the worker catch up. Once caught up, the window narrows back to ``base``.

The lag is smoothed with a fast attack and a slow release: a batch that waited longer than the
current estimate raises it at once, and the estimate decays toward shorter lags with a
half-life of ``release_s``, so that one quick batch in a backlog does not snap the window
shut. A lag under ``slack_s`` (the wait for a batch to fill, a tick) counts as none.

A backlog of minutes (a bulk load, a worker back after a long stop) is worked off faster
with a window wider still: every key a backlog touches would otherwise answer its listeners
every ``widest`` seconds with a state that is not yet current, and a listener of many keys
would be evaluated as often. Past ten times ``widest`` the window is a tenth of the lag, up to
``backlog_widest``: a message that waited five minutes waits at most another thirty seconds.

The same estimate stretches a booking's patience with an unanswered subscription
(``patience``): while the worker is behind, the answer is late because of the backlog, and
asking again would only add to it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import timedelta

# An answer is awaited for this many lags (see Pace.patience) beyond the base wait, and for at
# most this many base waits more: a replay's messages are as old as their originals, and a
# subscription lost meanwhile must still be asked for again within minutes.
PATIENCE_LAGS = 3.0
PATIENCE_MAX_BASES = 10
# In a backlog deeper than ten times the widest window, the window is this share of the lag.
BACKLOG_SHARE = 0.1
# A delivered send is stored as confirmed by the key's next write if that comes within this
# many windows (Pace.confirm_after): a key that keeps changing changes once per window.
CONFIRM_WINDOWS = 2.0


@dataclass
class Pace:
    #: the window when the worker keeps up (MIS_CONFLATE_WINDOW_S)
    base: float
    #: the widest it gets while the worker is behind (MIS_CONFLATE_MAX_WINDOW_S)
    widest: float
    #: the widest it gets in a deep backlog, at BACKLOG_SHARE of the lag
    #: (MIS_CONFLATE_BACKLOG_WINDOW_S; at or under ``widest``: never wider than that)
    backlog_widest: float = 0.0
    #: a lag under this is how batches normally wait, not a backlog
    slack_s: float = 0.25
    #: the half-life of the estimate's decay toward a shorter lag
    release_s: float = 2.0
    lag: float = field(default=0.0, init=False)
    #: the widest window given since the start
    widest_given: float = field(default=0.0, init=False)
    _at: float | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        if self.widest < self.base:
            raise ValueError(f"widest ({self.widest}) is under base ({self.base})")

    def observe(self, lag_s: float, at: float) -> None:
        """A batch started at ``at`` (seconds, monotonic) whose oldest message had waited
        ``lag_s`` for it."""
        lag = max(0.0, lag_s - self.slack_s)
        if self._at is not None and at > self._at:
            self.lag *= math.pow(0.5, (at - self._at) / self.release_s)
        self._at = at if self._at is None else max(self._at, at)
        self.lag = max(self.lag, lag)
        self.widest_given = max(self.widest_given, self.seconds)

    @property
    def seconds(self) -> float:
        window = min(self.widest, max(self.base, self.lag))
        if self.backlog_widest > self.widest:
            window = max(window, min(self.backlog_widest, BACKLOG_SHARE * self.lag))
        return window

    def window(self) -> timedelta:
        return timedelta(seconds=self.seconds)

    def confirm_after(self, least: float) -> float:
        """How long after its delivery a key's send waits to be stored as confirmed by a write
        of its own (streams.agents.batch.Deliveries), at least ``least`` seconds.

        A key that keeps changing is written once per window, and its confirmation rides on
        that write; a write of its own for every send would double the writes of a storm, and
        the work of a worker behind. Two windows: half a second when the worker keeps up, a
        few seconds while it is behind."""
        return max(least, CONFIRM_WINDOWS * self.seconds)

    def patience(self, base: timedelta) -> timedelta:
        """How long to wait for an answer before asking again, ``base`` when caught up.

        A subscription and its answer each cross a topic behind the same backlog, so while
        the worker is behind an answer takes about twice the lag, plus a batch at each key
        space: asking again sooner only adds work to the backlog that delays the answer."""
        extra = timedelta(seconds=PATIENCE_LAGS * self.lag)
        return base + min(extra, PATIENCE_MAX_BASES * base)
