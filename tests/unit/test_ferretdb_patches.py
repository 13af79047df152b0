"""launcher/go/ferretdb/patches: they apply to the pinned FerretDB and key the cached build."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from launcher import ferretdb
from streams.config import Settings


def _module_in_cache() -> Path | None:
    """FerretDB's published module in the Go module cache (filled by any earlier build)."""
    go = shutil.which("go")
    if go is None:
        return None
    cache = subprocess.run([go, "env", "GOMODCACHE"], capture_output=True, text=True).stdout
    module = (
        Path(cache.strip())
        / "github.com"
        / "!ferret!d!b"
        / f"!ferret!d!b@{ferretdb.FERRETDB_VERSION}"
    )
    return module if module.is_dir() else None


def test_there_are_patches() -> None:
    assert ferretdb.patches(), ferretdb.PATCH_DIR


def test_the_patches_apply_cleanly_to_the_pinned_module(tmp_path: Path) -> None:
    module = _module_in_cache()
    if module is None:
        pytest.skip("FerretDB's module is not in the Go module cache (no build has run here)")
    touched = {
        m for p in ferretdb.patches() for m in re.findall(r"^\+\+\+ b/(\S+)", p.read_text(), re.M)
    }
    assert touched
    for rel in touched:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(module / rel, tmp_path / rel)
    ferretdb.apply_patches(tmp_path, ferretdb.patches())
    for rel in touched:
        assert (tmp_path / rel).read_text() != (module / rel).read_text(), rel
    # Applied twice is an error, not a silent no-op: a patch that no longer fits fails the build.
    with pytest.raises(ferretdb.FerretDBBuildError):
        ferretdb.apply_patches(tmp_path, ferretdb.patches(), dry_run=True)


def test_the_cached_build_is_keyed_by_the_patches(tmp_path: Path) -> None:
    settings = Settings(cache_dir=tmp_path)
    stock = ferretdb.binary_path(settings, patched=False)
    patched = ferretdb.binary_path(settings)
    assert stock == tmp_path / f"ferretdb-{ferretdb.FERRETDB_VERSION}" / "ferretdb"
    assert (
        patched.parent.name == f"ferretdb-{ferretdb.FERRETDB_VERSION}-p{ferretdb.patches_digest()}"
    )
    assert re.fullmatch(r"[0-9a-f]{12}", ferretdb.patches_digest())
