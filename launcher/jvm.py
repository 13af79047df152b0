"""How the stack's JVMs are started: capped heap, small-machine GC, log4j2 to stdout."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping
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
        capture_output=True, text=True, check=False,
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


def command(
    main_class: str,
    *,
    heap: str,
    classpath: str,
    log4j2: Path,
    args: list[str],
    props: Mapping[str, str] | None = None,
) -> list[str]:
    argv = [
        java_bin(),
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
