"""Jars from Maven Central, copied once into the cache and reused while the pom is unchanged."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from launcher.errors import ResolveError
from launcher.paths import MAVEN_DIR, StackPaths

log = logging.getLogger(__name__)

# Bump when the layout of a copied directory changes, so old caches are redone.
_LAYOUT = "1"


@dataclass(frozen=True)
class Bundle:
    name: str
    pom: Path
    target: Path

    def digest(self) -> str:
        return hashlib.sha256(_LAYOUT.encode() + self.pom.read_bytes()).hexdigest()


def bundles(paths: StackPaths) -> list[Bundle]:
    return [
        Bundle("kafka", MAVEN_DIR / "kafka" / "pom.xml", paths.kafka_jars),
        Bundle("debezium", MAVEN_DIR / "debezium" / "pom.xml", paths.debezium_plugin),
    ]


def is_cached(bundle: Bundle, paths: StackPaths) -> bool:
    marker = paths.markers / f"{bundle.name}.sha256"
    return (
        marker.is_file()
        and marker.read_text().strip() == bundle.digest()
        and any(bundle.target.glob("*.jar"))
    )


def resolve(paths: StackPaths) -> None:
    for bundle in bundles(paths):
        if is_cached(bundle, paths):
            log.debug("%s jars cached in %s", bundle.name, bundle.target)
            continue
        _copy_dependencies(bundle, paths)


def _copy_dependencies(bundle: Bundle, paths: StackPaths) -> None:
    mvn = shutil.which("mvn")
    if mvn is None:
        raise ResolveError("mvn not found: install Maven 3.8+ (apt-get install maven)")
    log.info("resolving %s jars from Maven Central into %s", bundle.name, bundle.target)
    # Per process, since stacks with different state dirs share one cache and may resolve at once;
    # outside plugin.path, where Connect would take a half-copied directory for a plugin.
    staging = paths.cache / "staging" / f"{bundle.name}-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    paths.markers.mkdir(parents=True, exist_ok=True)
    mvn_log = paths.markers / f"{bundle.name}.mvn-{os.getpid()}.log"
    argv = [
        mvn,
        "-B",
        "-q",
        "-Dstyle.color=never",
        "-f",
        str(bundle.pom),
        "dependency:copy-dependencies",
        f"-DoutputDirectory={staging}",
        "-DincludeScope=runtime",
    ]
    with open(mvn_log, "wb") as out:
        result = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, check=False)
    if result.returncode != 0 or not any(staging.glob("*.jar")):
        raise ResolveError(
            f"maven could not resolve {bundle.pom.relative_to(MAVEN_DIR.parent.parent)}; "
            f"see {mvn_log}"
        )
    if is_cached(bundle, paths):  # another launcher finished first
        shutil.rmtree(staging, ignore_errors=True)
        return
    # Swap in the complete directory only, so an interrupted resolve never looks cached.
    shutil.rmtree(bundle.target, ignore_errors=True)
    bundle.target.parent.mkdir(parents=True, exist_ok=True)
    staging.rename(bundle.target)
    (paths.markers / f"{bundle.name}.sha256").write_text(bundle.digest() + "\n")
    mvn_log.unlink(missing_ok=True)


def classpath(paths: StackPaths) -> str:
    jars = sorted(paths.kafka_jars.glob("*.jar"))
    if not jars:
        raise ResolveError(f"no Kafka jars in {paths.kafka_jars}: run `python -m launcher up`")
    return ":".join(str(j) for j in jars)
