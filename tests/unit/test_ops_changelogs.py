"""The worker creates every table's changelog before Faust starts (streams.admin)."""

from __future__ import annotations

from streams import admin, tables, topology
from streams.app import settings


def test_admin_creates_the_changelog_of_every_faust_table() -> None:
    faust_tables = [
        tables.location_state,
        tables.vendor_state,
        tables.inspection_state,
        tables.booking_state,
        tables.truncations,
        tables.booking_parts,
    ]
    expected = {t.changelog_topic.get_topic_name() for t in faust_tables}
    declared = admin.pipeline_topics(settings)
    assert expected == {topology.changelog_topic(settings.app_id, t) for t in topology.TABLES}
    assert expected <= set(declared)
    assert all(declared[name] == {"cleanup.policy": "compact"} for name in expected)
