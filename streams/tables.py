"""Every table of the pipeline: the join state, on RocksDB with a changelog topic each."""

from __future__ import annotations

from streams.app import app, settings

# Keys and values are raw bytes: values are pydantic JSON (see agents.common), which pydantic
# writes and reads several times faster than Faust's json codec would.
_options = {"partitions": settings.partitions, "key_type": bytes, "value_type": bytes}

location_state = app.Table(
    "location-state", help="sensors, pests and subscribers per location", **_options
)
vendor_state = app.Table("vendor-state", help="certificates and subscribers per vendor", **_options)
inspection_state = app.Table(
    "inspection-state", help="the inspection and its subscribers", **_options
)
booking_state = app.Table(
    "booking-state", help="a booking, its three parts, the last snapshot", **_options
)
