"""Re-deriving one booking's snapshot from the source tables, through Debezium and the pipeline."""

from __future__ import annotations

import logging
from uuid import UUID, uuid4

from streams.api.errors import NotFound
from streams.api.models import ReconcileResponse
from streams.api.publishing import Publishing
from streams.api.signals import reconcile_conditions, signal_data, signal_id
from streams.api.store import Store

log = logging.getLogger(__name__)


async def reconcile(store: Store, publishing: Publishing, booking_id: UUID) -> ReconcileResponse:
    """Ask Debezium to re-read the booking's rows; rewrite its listing from the stored snapshot.

    The re-read rows heal what the pipeline missed; rewriting the listing heals a MongoDB
    document that drifted from the row it was written from, which no source change would touch.
    """
    keys = await store.booking_keys(booking_id)
    if keys is None:
        raise NotFound(f"booking {booking_id} is not in storage_bookings")
    conditions = reconcile_conditions(keys)
    sid = signal_id(booking_id, uuid4().hex[:8])
    await store.execute_snapshot(sid, signal_data(conditions))
    row = await store.snapshot(booking_id)
    republished = False
    if row is not None and row["market_listing_id"] is not None:
        republished = booking_id in await publishing.publish_rows([row])
    log.info(
        "reconcile booking_id=%s signal_id=%s collections=%d listing_republished=%s",
        booking_id,
        sid,
        len(conditions),
        republished,
    )
    return ReconcileResponse(
        booking_id=booking_id,
        signal_id=sid,
        data_collections=[c.data_collection for c in conditions],
        additional_conditions=conditions,
        listing_republished=republished,
    )
