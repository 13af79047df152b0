"""How the stack's JVMs are started: capped heap, small-machine GC, log4j2 to stdout."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from launcher.errors import PreflightError

MIN_JAVA = 17

_LOG4J2 = """\
status = warn
appender.out.type = Console
appender.out.name = STDOUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = STDOUT
# Every client prints its full config at INFO; that buries the lines that matter.
logger.clients.name = org.apache.kafka.clients
logger.clients.level = WARN
logger.appinfo.name = org.apache.kafka.common.utils.AppInfoParser
logger.appinfo.level = WARN
logger.plugins.name = org.apache.kafka.connect.runtime.isolation.DelegatingClassLoader
logger.plugins.level = WARN
logger.reflections.name = org.reflections
logger.reflections.level = ERROR
"""


def java_bin() -> str:
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").is_file():
        return str(Path(home) / "bin" / "java")
    found = shutil.which("java")
    if found is None:
        raise PreflightError(
            f"java not found: install a JDK {MIN_JAVA}+ (apt-get install openjdk-17-jre-headless) "
            "or set JAVA_HOME"
        )
    return found


def java_major(java: str) -> int:
    out = subprocess.run(
        [java, "-XshowSettings:properties", "-version"],
        capture_output=True,
        text=True,
        check=False,
    ).stderr
    for line in out.splitlines():
        key, _, value = line.strip().partition(" = ")
        if key == "java.specification.version":
            return int(value.split(".")[-1] if value.startswith("1.") else value)
    raise PreflightError(f"could not tell the version of {java}; is it a working JDK?")


def write_log4j2(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "log4j2.properties"
    path.write_text(_LOG4J2)
    return path


@dataclass(frozen=True)
class ClassArchive:
    """A dynamic class-data-sharing archive, dumped at a JVM's first clean exit.

    Loading and verifying a few thousand classes from ~100 jars is most of a Kafka or Connect
    start on two cores; mapping them from an archive instead saves seconds on every warm start.
    The archive is only valid for the exact JVM and classpath, so both are in its name.
    """

    cached: Path
    dump: Path

    def options(self) -> list[str]:
        if self.cached.is_file():
            return [f"-XX:SharedArchiveFile={self.cached}"]
        self.dump.parent.mkdir(parents=True, exist_ok=True)
        return [f"-XX:ArchiveClassesAtExit={self.dump}"]

    def keep(self) -> None:
        """Move a freshly dumped archive into the cache; call only after a clean exit."""
        if not self.dump.is_file() or self.cached.is_file():
            return
        self.cached.parent.mkdir(parents=True, exist_ok=True)
        # Copy next to the target, then rename: a reader never maps a half-written archive.
        staging = self.cached.with_suffix(f".{os.getpid()}.tmp")
        shutil.copyfile(self.dump, staging)
        os.replace(staging, self.cached)
        self.dump.unlink()


def class_archive(
    cache: Path, dump_dir: Path, name: str, main_class: str, classpath: str
) -> ClassArchive:
    java = Path(java_bin()).resolve()
    ident = f"{java}|{java.stat().st_mtime_ns}|{main_class}|{classpath}"
    key = hashlib.sha256(ident.encode()).hexdigest()[:16]
    return ClassArchive(cache / "cds" / f"{name}-{key}.jsa", dump_dir / f"{name}.jsa")


def command(
    main_class: str,
    *,
    heap: str,
    classpath: str,
    log4j2: Path,
    args: list[str],
    props: Mapping[str, str] | None = None,
    archive: ClassArchive | None = None,
    jit_c1_only: bool = False,
) -> list[str]:
    argv = [
        java_bin(),
        *(archive.options() if archive else []),
        # For short-lived tools: C2 compiles nothing useful before they exit.
        *(["-XX:TieredStopAtLevel=1"] if jit_c1_only else []),
        f"-Xmx{heap}",
        "-Xms64m",
        # Two cores and heaps under 1 GiB: the serial collector needs no GC threads of its own
        # and has the smallest footprint; pauses at this heap size stay in the low milliseconds.
        "-XX:+UseSerialGC",
        "-XX:+ExitOnOutOfMemoryError",
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={log4j2}",
    ]
    argv += [f"-D{key}={value}" for key, value in (props or {}).items()]
    return [*argv, "-cp", classpath, main_class, *args]
