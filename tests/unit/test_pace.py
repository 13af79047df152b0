"""The conflation window under load (streams.pace), without a broker."""

from __future__ import annotations

from datetime import timedelta

import pytest

from streams.pace import BACKLOG_SHARE, CONFIRM_WINDOWS, PATIENCE_LAGS, PATIENCE_MAX_BASES, Pace


def test_a_worker_that_keeps_up_uses_the_base_window() -> None:
    pace = Pace(base=0.25, widest=2.0)
    assert pace.window() == timedelta(seconds=0.25)
    for i in range(20):
        pace.observe(0.2, at=i * 0.1)  # batches wait for their messages as usual
    assert pace.seconds == 0.25


def test_a_backlog_widens_the_window_to_the_wait_at_once_up_to_the_widest() -> None:
    pace = Pace(base=0.25, widest=2.0, slack_s=0.25)
    pace.observe(1.25, at=0.0)
    assert pace.seconds == pytest.approx(1.0)
    pace.observe(10.0, at=0.1)
    assert pace.seconds == 2.0
    assert pace.widest_given == 2.0


def test_the_window_narrows_back_gradually_once_caught_up() -> None:
    pace = Pace(base=0.25, widest=4.0, slack_s=0.0, release_s=2.0)
    pace.observe(4.0, at=0.0)
    pace.observe(0.0, at=2.0)  # one quick batch: half of the estimate is left
    assert pace.seconds == pytest.approx(2.0)
    pace.observe(0.0, at=4.0)
    assert pace.seconds == pytest.approx(1.0)
    pace.observe(0.0, at=20.0)
    assert pace.seconds == 0.25
    assert pace.widest_given == 4.0


def test_batches_reported_out_of_order_do_not_decay_the_estimate_twice() -> None:
    pace = Pace(base=0.0, widest=10.0, slack_s=0.0, release_s=1.0)
    pace.observe(4.0, at=5.0)
    pace.observe(1.0, at=4.0)  # an agent whose batch started earlier reports later
    assert pace.seconds == pytest.approx(4.0)
    pace.observe(0.0, at=6.0)
    assert pace.seconds == pytest.approx(2.0)


def test_a_widest_at_the_base_never_widens() -> None:
    pace = Pace(base=0.25, widest=0.25)
    pace.observe(30.0, at=0.0)
    assert pace.seconds == 0.25


def test_a_widest_under_the_base_is_refused() -> None:
    with pytest.raises(ValueError, match="under base"):
        Pace(base=1.0, widest=0.5)


def test_patience_with_an_unanswered_subscription_grows_with_the_backlog_and_returns() -> None:
    base = timedelta(seconds=30)
    pace = Pace(base=0.25, widest=2.0, slack_s=0.0, release_s=2.0)
    assert pace.patience(base) == base
    pace.observe(100.0, at=0.0)  # the window stops at its widest; the patience does not
    assert pace.seconds == 2.0
    assert pace.patience(base) == base + timedelta(seconds=PATIENCE_LAGS * 100.0)
    pace.observe(0.0, at=60.0)  # caught up for thirty half-lives
    assert pace.patience(base) - base < timedelta(seconds=0.001)
    pace.observe(86_400.0, at=61.0)  # a replay of day-old messages: minutes, not days
    assert pace.patience(base) == base + PATIENCE_MAX_BASES * base


def test_a_deep_backlog_widens_the_window_to_a_share_of_the_lag_up_to_its_own_widest() -> None:
    pace = Pace(base=0.25, widest=2.0, backlog_widest=30.0, slack_s=0.0)
    pace.observe(10.0, at=0.0)  # a storm's backlog: the widest window, as without it
    assert pace.seconds == 2.0
    pace.observe(100.0, at=0.1)
    assert pace.seconds == pytest.approx(BACKLOG_SHARE * 100.0)
    pace.observe(3000.0, at=0.2)
    assert pace.seconds == 30.0
    narrow = Pace(base=0.25, widest=2.0, backlog_widest=1.0, slack_s=0.0)
    narrow.observe(3000.0, at=0.0)
    assert narrow.seconds == 2.0


def test_a_confirmation_waits_two_windows_so_that_it_rides_on_the_next_change() -> None:
    pace = Pace(base=0.25, widest=2.0, slack_s=0.0, release_s=2.0)
    assert pace.confirm_after(0.0) == CONFIRM_WINDOWS * 0.25
    assert pace.confirm_after(5.0) == 5.0  # MIS_CONFIRM_AFTER_S is the least
    pace.observe(1.5, at=0.0)  # behind: the keys of a storm change once per 1.5 s window
    assert pace.confirm_after(0.0) == CONFIRM_WINDOWS * 1.5
    pace.observe(0.0, at=60.0)  # caught up
    assert pace.confirm_after(0.0) == pytest.approx(CONFIRM_WINDOWS * 0.25)
