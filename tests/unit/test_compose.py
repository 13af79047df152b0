"""docker-compose.yml is a valid Compose file and describes the same system as the local stack.

No Docker needed: the file is read as YAML, validated against the Compose Specification's JSON
schema (tests/data/compose-spec.json), interpolated the way Compose does (.env, then ${VAR:-...}),
and compared with what the launcher and the pipeline use: images against the Maven poms, broker
and Postgres settings against the launcher's, topics, partitions, ports and MIS_* names against
Settings, and the connector JSON that both stacks register.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from launcher.connect import Connect, internal_topics
from launcher.connectors import CONNECTORS_DIR
from launcher.kafka import Kafka
from launcher.paths import SQL_DIR, StackPaths
from launcher.postgres import _conf as postgres_conf
from streams.admin import pipeline_topics
from streams.config import Settings

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "docker-compose.yml"
SCHEMA = REPO / "tests" / "data" / "compose-spec.json"
# ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?error}, ${NAME:+alt}, $NAME and $$ (a "$").
_VAR = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<name>\w+)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}|(?P<bare>\w+))"
)
#: service -> (the port it listens on in its container, the Settings field of its host port)
PUBLISHED = {
    "postgres": (5432, "pg_port"),
    "kafka": (29092, "kafka_port"),
    "connect": (8083, "connect_port"),
    "mongo": (27017, "mongo_port"),
    "worker": (56066, "web_port"),
}


def dotenv() -> dict[str, str]:
    return properties((REPO / ".env").read_text())


def interpolate(value: Any, env: Mapping[str, str]) -> Any:
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def substitute(m: re.Match[str]) -> str:
        if m["escaped"]:
            return "$"
        name, op, arg = m["name"] or m["bare"], m["op"], m["arg"] or ""
        found = env.get(name)
        if op in (":?", "?") and not found:
            raise KeyError(f"{name} is required: {arg}")
        if op == ":-":
            return found or arg
        if op == "-":
            return arg if found is None else found
        if op in (":+", "+"):
            return arg if found else ""
        return found or ""

    return _VAR.sub(substitute, value)


def raw() -> dict[str, Any]:
    doc = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(doc, dict)
    return doc


#: what a user adds to .env (or exports) before `docker compose up`; the checked-in .env has none
SECRETS = {"MIS_PG_PASSWORD": "a-password-of-the-users-own"}


def compose(**env: str) -> dict[str, Any]:
    """The file as Compose sees it with .env, the user's secrets and these variables (and no
    other MIS_*)."""
    return interpolate(raw(), {**dotenv(), **SECRETS, **env})


def environment(service: str, **env: str) -> dict[str, str]:
    found = compose(**env)["services"][service].get("environment", {})
    assert isinstance(found, dict), f"{service}: write environment as a mapping"
    return {k: str(v) for k, v in found.items()}


def published(service: str, **env: str) -> tuple[str, int, int]:
    (mapping,) = compose(**env)["services"][service]["ports"]
    host_ip, host_port, container_port = mapping.split(":")
    return host_ip, int(host_port), int(container_port)


def field(name: str) -> str:
    assert name.startswith("MIS_"), name
    key = name.removeprefix("MIS_").lower()
    assert key in Settings.model_fields, f"{name} is not a setting of streams/config.py"
    return key


def settings_from(env: Mapping[str, str]) -> Settings:
    """Settings from these MIS_* variables (others ignored) over the defaults."""
    values: dict[str, Any] = {field(k): v for k, v in env.items() if k.startswith("MIS_")}
    return Settings(**values)


def plain(value: Any) -> Any:
    return value.get_secret_value() if hasattr(value, "get_secret_value") else value


def properties(text: str) -> dict[str, str]:
    """KEY=VALUE lines (a .properties or .env file), comments and blank lines left out."""
    lines = (line.strip() for line in text.splitlines())
    pairs = (line.split("=", 1) for line in lines if line and not line.startswith("#"))
    return {k.strip(): v.strip() for k, v in pairs}


def pom_property(pom: str, name: str) -> str:
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    found = ET.parse(REPO / "launcher" / "maven" / pom / "pom.xml").find(
        f"m:properties/m:{name}", ns
    )
    assert found is not None and found.text
    return found.text


def tag(image: str) -> str:
    return image.rsplit(":", 1)[1]


@pytest.fixture(autouse=True)
def _no_mis_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # Settings() must show the defaults here, whatever stack the calling shell points at.
    for name in [n for n in os.environ if n.startswith("MIS_")]:
        monkeypatch.delenv(name)


# --------------------------------------------------------------------------- the file itself
@pytest.mark.parametrize("view", ["as written", "interpolated"])
def test_compose_file_follows_the_compose_specification(view: str) -> None:
    schema = json.loads(SCHEMA.read_text())
    doc = raw() if view == "as written" else compose()
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(doc), key=str)
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors)


def test_every_long_running_service_has_a_healthcheck_and_dependencies_wait_for_it() -> None:
    services = compose()["services"]
    one_shot = {name for name, s in services.items() if s.get("restart") == "no"}
    assert one_shot == {"register"}
    for name, service in services.items():
        if name not in one_shot:
            assert service.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
        for dep, how in service.get("depends_on", {}).items():
            expected = "service_completed_successfully" if dep in one_shot else "service_healthy"
            assert how == {"condition": expected}, f"{name} -> {dep}: {how}"
    assert "register" in services["worker"]["depends_on"]


def test_images_are_pinned_in_dotenv_only() -> None:
    pins = dotenv()
    for name, service in raw()["services"].items():
        image = service["image"]
        if "build" in service:
            assert service["build"]["args"] == {"PYTHON_IMAGE": "${PYTHON_IMAGE:?set in .env}"}
            continue
        m = re.fullmatch(r"\$\{(\w+):\?[^}]*\}", image)
        assert m and m[1] in pins, f"{name}: image {image!r} is not a variable of .env"
    for variable, image in pins.items():
        assert re.fullmatch(r"[\w./-]+:[\w.-]+", image), f"{variable}={image} has no tag"
        assert not image.endswith(":latest"), f"{variable}={image}"
    dockerfile = (REPO / "Dockerfile").read_text()
    assert f"ARG PYTHON_IMAGE={pins['PYTHON_IMAGE']}\n" in dockerfile


# --------------------------------------------------------------------------- versions
def test_versions_are_the_local_stacks() -> None:
    pins = dotenv()
    assert tag(pins["KAFKA_IMAGE"]) == pom_property("kafka", "kafka.version")
    assert tag(pins["DEBEZIUM_CONNECT_IMAGE"]) == pom_property("debezium", "debezium.version")
    native_pg = re.search(r"postgresql/(\d+)/bin", (REPO / "launcher" / "postgres.py").read_text())
    assert native_pg and re.split(r"[.-]", tag(pins["POSTGRES_IMAGE"]))[0] == native_pg[1]
    requires = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    python = re.match(r"\d+\.\d+", tag(pins["PYTHON_IMAGE"]))
    assert python and f">={python[0]}," in requires


# --------------------------------------------------------------------------- settings
def test_every_MIS_name_is_a_setting_and_every_default_is_the_settings_default() -> None:
    text = COMPOSE.read_text() + (REPO / "Dockerfile").read_text()
    names = set(re.findall(r"\bMIS_\w+", text))
    assert {"MIS_PARTITIONS", "MIS_PG_HOST", "MIS_KAFKA_HOST", "MIS_APP_ID"} <= names
    for name in names:
        field(name)
    defaults = re.findall(r"\$\{(MIS_\w+):-([^}]*)\}", COMPOSE.read_text())
    assert defaults
    native = Settings()
    for name, default in defaults:
        key = field(name)
        written = getattr(settings_from({name: default}), key)
        assert plain(written) == plain(getattr(native, key)), f"{name}: {default!r}"


def test_containers_reach_each_other_by_service_name_on_their_own_ports() -> None:
    services = compose()["services"]
    for client in ("worker", "register"):
        env = environment(client)
        for prefix, service in (
            ("PG", "postgres"),
            ("KAFKA", "kafka"),
            ("CONNECT", "connect"),
            ("MONGO", "mongo"),
        ):
            assert env[f"MIS_{prefix}_HOST"] == service and service in services
    assert environment("worker")["MIS_PG_PORT"] == str(published("postgres")[2])
    assert environment("worker")["MIS_CONNECT_PORT"] == str(published("connect")[2])
    assert environment("worker")["MIS_MONGO_PORT"] == str(published("mongo")[2])
    kafka = environment("kafka")
    port = environment("worker")["MIS_KAFKA_PORT"]
    assert f"PLAINTEXT://kafka:{port}" in kafka["KAFKA_ADVERTISED_LISTENERS"].split(",")
    assert environment("connect")["BOOTSTRAP_SERVERS"] == f"kafka:{port}"


@pytest.mark.parametrize(
    "env",
    [
        {},
        {
            "MIS_PG_PORT": "15432",
            "MIS_KAFKA_PORT": "19092",
            "MIS_CONNECT_PORT": "18083",
            "MIS_MONGO_PORT": "17017",
            "MIS_WEB_PORT": "16066",
        },
    ],
)
def test_the_host_reaches_the_containers_on_the_local_stacks_ports(env: dict[str, str]) -> None:
    settings = settings_from(env)
    for service, (container_port, key) in PUBLISHED.items():
        assert published(service, **env) == ("127.0.0.1", getattr(settings, key), container_port)
    # Clients on the host bootstrap from 127.0.0.1:MIS_KAFKA_PORT and must be sent back there.
    listeners = environment("kafka", **env)["KAFKA_ADVERTISED_LISTENERS"].split(",")
    assert f"HOST://{settings.kafka_bootstrap}" in listeners
    # The worker's HTTP port in its container is the default one, which its healthcheck asks.
    assert Settings().web_port == PUBLISHED["worker"][0]
    check = " ".join(compose(**env)["services"]["worker"]["healthcheck"]["test"])
    assert f"127.0.0.1:{Settings().web_port}/health" in check


# --------------------------------------------------------------------------- topics, partitions
@pytest.mark.parametrize("partitions", [None, "7"])
def test_one_partition_count_for_every_topic(partitions: str | None) -> None:
    env = {"MIS_PARTITIONS": partitions} if partitions else {}
    expected = partitions or str(Settings().partitions)
    assert environment("worker", **env)["MIS_PARTITIONS"] == expected  # the pipeline's topics
    assert environment("connect", **env)["MIS_PARTITIONS"] == expected  # Debezium's topics
    assert environment("kafka", **env)["KAFKA_NUM_PARTITIONS"] == expected  # anything else
    for spec in sorted(CONNECTORS_DIR.glob("*.json")):
        config = json.loads(spec.read_text())["config"]
        assert config["topic.creation.default.partitions"] == "${env:MIS_PARTITIONS}"


def test_the_worker_creates_the_same_topics_as_on_the_local_stack() -> None:
    env = environment("worker")
    in_compose = settings_from(env)
    native = Settings()
    assert pipeline_topics(in_compose) == pipeline_topics(native)
    assert in_compose.partitions == native.partitions
    assert in_compose.cdc_topic("storage_bookings") == native.cdc_topic("storage_bookings")


# --------------------------------------------------------------------------- connector, Connect
def test_the_connector_is_registered_from_the_same_json_as_on_the_local_stack() -> None:
    register = compose()["services"]["register"]
    assert register["command"] == ["python", "connectors/register.py"]
    assert CONNECTORS_DIR == REPO / "connectors"  # what register.py loads, through the launcher
    ignored = (REPO / ".dockerignore").read_text().split()
    assert not {"connectors", "connectors/", "schemas", "schemas/"} & set(ignored)
    connect = environment("connect")
    specs = sorted(CONNECTORS_DIR.glob("*.json"))
    assert specs
    for spec in specs:
        for name in re.findall(r"\$\{env:(\w+)\}", spec.read_text()):
            field(name)
            assert name in connect, f"{spec.name} reads ${{env:{name}}}: not set for connect"
    assert connect["MIS_PG_HOST"] == "postgres"


def test_connect_is_configured_like_the_local_stacks() -> None:
    settings = Settings()
    native = properties(Connect(settings, StackPaths.from_settings(settings)).worker_properties())
    env = environment("connect")
    assert env["CONNECT_CONFIG_PROVIDERS"] == native["config.providers"]
    assert env["CONNECT_CONFIG_PROVIDERS_ENV_CLASS"] == native["config.providers.env.class"]
    topics = internal_topics(settings)
    assert env["CONFIG_STORAGE_TOPIC"] == topics["config.storage.topic"]
    assert env["OFFSET_STORAGE_TOPIC"] == topics["offset.storage.topic"]
    assert env["STATUS_STORAGE_TOPIC"] == topics["status.storage.topic"]
    assert env["GROUP_ID"] == native["group.id"]
    assert env["OFFSET_FLUSH_INTERVAL_MS"] == native["offset.flush.interval.ms"]
    assert env["HEAP_OPTS"] == f"-Xmx{settings.connect_heap}"


# --------------------------------------------------------------------------- Kafka, Postgres
def test_kafka_is_one_kraft_node_configured_like_the_local_stacks() -> None:
    settings = Settings()
    native = properties(Kafka(settings, StackPaths.from_settings(settings)).server_properties())
    # Addresses and paths differ by nature; everything else is the same broker.
    for key in (
        "listeners",
        "advertised.listeners",
        "controller.quorum.bootstrap.servers",
        "listener.security.protocol.map",
        "log.dirs",
    ):
        native.pop(key)
    env = environment("kafka")
    for key, value in native.items():
        variable = "KAFKA_" + key.upper().replace(".", "_")
        assert env.get(variable) == value, (
            f"{variable}: compose {env.get(variable)!r}, local {value!r}"
        )
    assert env["KAFKA_HEAP_OPTS"] == f"-Xmx{settings.kafka_heap}"


def test_postgres_decodes_logically_and_starts_with_the_projects_schema() -> None:
    postgres = compose()["services"]["postgres"]
    command = postgres["command"]
    assert command[0] == "postgres"
    flags = dict(arg.split("=", 1) for arg in command[2::2])
    assert command[1::2] == ["-c"] * len(flags)
    native = {
        k.strip(): v.strip().strip("'")
        for k, v in (
            line.split("=", 1)
            for line in postgres_conf(55432).splitlines()
            if "=" in line and not line.startswith("#")
        )
    }
    for key in ("wal_level", "max_replication_slots", "max_wal_senders", "max_slot_wal_keep_size"):
        assert flags[key] == native[key], key
    assert flags["wal_level"] == "logical"
    assert "./schemas/sql:/docker-entrypoint-initdb.d:ro" in postgres["volumes"]
    assert SQL_DIR == REPO / "schemas" / "sql" and sorted(SQL_DIR.glob("*.sql"))
    env, settings = environment("postgres"), settings_from(environment("worker"))
    assert env["POSTGRES_USER"] == settings.pg_user
    assert env["POSTGRES_PASSWORD"] == settings.pg_password.get_secret_value()
    assert env["POSTGRES_DB"] == settings.pg_database
    assert environment("connect")["MIS_PG_PASSWORD"] == env["POSTGRES_PASSWORD"]


def test_passwords_come_from_dotenv_or_the_environment_and_have_no_default() -> None:
    text = COMPOSE.read_text()
    assert not re.search(r"PASSWORD:-", text), "a password with a default in docker-compose.yml"
    assert "MIS_PG_PASSWORD" not in dotenv(), "a password in the checked-in .env"
    with pytest.raises(KeyError, match="MIS_PG_PASSWORD"):
        interpolate(raw(), dotenv())
    for service in ("postgres", "connect", "worker", "register"):
        found = environment(service)
        password = found.get("POSTGRES_PASSWORD", found.get("MIS_PG_PASSWORD"))
        assert password == SECRETS["MIS_PG_PASSWORD"], service
