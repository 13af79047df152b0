"""The start-up check of the Faust and aiokafka internals the pipeline relies on."""

from __future__ import annotations

from importlib import metadata

import pytest
from faust.tables.recovery import Recovery

from streams.runtime import compat


def test_the_installed_versions_pass() -> None:
    compat.check()


def test_another_release_is_refused_with_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    real = metadata.version
    monkeypatch.setattr(
        compat.metadata,
        "version",
        lambda name: "0.16.1" if name == "faust-streaming" else real(name),
    )
    with pytest.raises(compat.IncompatibleRuntime) as err:
        compat.check()
    assert "faust-streaming 0.16.1 (written for 0.15.x)" in str(err.value)
    assert "make install" in str(err.value)


def test_a_private_name_that_has_gone_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(Recovery, "_set_recovery_ended")
    with pytest.raises(compat.IncompatibleRuntime) as err:
        compat.check()
    assert "Recovery._set_recovery_ended is gone" in str(err.value)


def test_a_producer_that_cannot_compress_is_refused_with_what_to_do(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import aiokafka.codec

    monkeypatch.setattr(aiokafka.codec, "has_snappy", lambda: False)
    with pytest.raises(compat.IncompatibleRuntime) as err:
        compat.check()
    assert "cramjam" in str(err.value) and "make install" in str(err.value)
