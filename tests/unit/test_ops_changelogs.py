"""The worker creates every table's changelog before Faust starts (streams.admin)."""

from __future__ import annotations

from streams import admin, topology
from streams.config import get_settings
from streams.runtime import build


def test_admin_creates_the_changelog_of_every_faust_table() -> None:
    settings = get_settings()
    tables = build(settings, agents=False).tables.all()
    expected = {t.changelog_topic.get_topic_name() for t in tables}
    declared = admin.pipeline_topics(settings)
    assert expected == {topology.changelog_topic(settings.app_id, t) for t in topology.TABLES}
    assert expected <= set(declared)
    assert all(declared[name] == {"cleanup.policy": "compact"} for name in expected)
