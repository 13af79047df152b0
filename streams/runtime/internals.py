"""The private Faust names the pipeline reads or sets outside its fixes (streams.runtime.faustfix).

Each is checked by streams.runtime.compat before an app is built; every use goes through here.
"""

from __future__ import annotations

import weakref
from typing import Any

from faust.streams import _current_event


def make_current(event: Any) -> None:
    """Make ``event`` the one the table stores take their partition from.

    Only the context variable the stores read: ``Stream.current_event`` must stay as it is,
    because ``take_events()`` records the buffered events from that attribute."""
    _current_event.set(weakref.ref(event))


def committed_offsets(consumer: Any) -> dict[Any, int]:
    """The offsets Faust committed (and those it read at assignment), by topic partition."""
    return dict(consumer._committed_offset)
