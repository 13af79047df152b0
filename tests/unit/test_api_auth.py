"""Who may call the API: token entries, matching, scopes, the write rate, and the refusals.

The guard runs inside the API's real middleware on an aiohttp server on loopback, with handlers
that answer 200 on the API's routes, so what is tested is exactly what a caller sees.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from streams.api import auth
from streams.api.auth import Guard, TokenConfigError, Tokens, entry, new_token, parse_entries
from streams.api.middleware import api_middleware
from streams.api.models import ProblemResponse
from streams.api.ratelimit import RateLimiter
from streams.config import Settings

READER, WRITER, ADMIN = new_token(), new_token(), new_token()
ENTRIES = " ".join(
    [
        entry("reader", READER, ["read"]),
        entry("writer", WRITER, ["read", "publish"]),
        entry("admin", ADMIN, ["read", "publish", "operate", "metrics"]),
    ]
)
PUBLISH = "/storage-guard/snapshots/00000000-0000-0000-0000-000000000001/publish"
SNAPSHOT = "/storage-guard/snapshots/00000000-0000-0000-0000-000000000001"


@pytest.fixture(autouse=True)
def _no_api_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.startswith("MIS_API_")]:
        monkeypatch.delenv(name)


def settings(**values: Any) -> Settings:
    return Settings(**{"api_tokens": ENTRIES, **values})


# --------------------------------------------------------------------------- entries, tokens
def test_a_new_token_is_long_random_and_only_its_digest_is_configured() -> None:
    token = new_token()
    assert token.startswith("mis_") and len(token) >= 40 and token != new_token()
    line = entry("ci", token, ["publish", "read"])
    assert token not in line
    (parsed,) = parse_entries(line, "test")
    assert parsed.name == "ci" and parsed.scopes == {"read", "publish"}


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("ci", "name:sha256-hex:scopes"),
        ("ci:abc:read", "64 lowercase hex"),
        (f"ci:{'0' * 64}:", "scopes are"),
        (f"ci:{'0' * 64}:read,root", "not root"),
        (f"c i:{'0' * 64}:read", "name:sha256-hex:scopes"),
        (f"-x:{'0' * 64}:read", "token name"),
    ],
)
def test_an_unusable_entry_is_refused_without_echoing_it(text: str, says: str) -> None:
    with pytest.raises(TokenConfigError, match=says) as caught:
        parse_entries(text, "MIS_API_TOKENS")
    assert "abc" not in str(caught.value) and "0" * 64 not in str(caught.value)


def test_a_name_configured_twice_is_refused(tmp_path: Path) -> None:
    file = tmp_path / "tokens"
    file.write_text(entry("reader", new_token(), ["read"]) + "\n")
    with pytest.raises(TokenConfigError, match="twice"):
        Tokens(settings(api_tokens_file=file))


def test_several_tokens_are_valid_at_once_and_others_are_not() -> None:
    tokens = Tokens(settings())
    assert [tokens.match(t).name for t in (READER, WRITER, ADMIN)] == ["reader", "writer", "admin"]  # type: ignore[union-attr]
    assert tokens.match(new_token()) is None
    assert tokens.match(READER[:-1]) is None
    assert tokens.match(auth.digest(READER)) is None  # the digest is not a token
    assert tokens.match("\udcff") is None


def test_the_token_file_is_read_again_when_it_changes(tmp_path: Path) -> None:
    old, new = new_token(), new_token()
    file = tmp_path / "tokens"
    file.write_text(f"# rotation\n{entry('old', old, ['read'])}\n")
    tokens = Tokens(Settings(api_tokens_file=file))
    assert tokens.match(old) is not None and tokens.match(new) is None
    file.write_text(f"{entry('old', old, ['read'])}\n{entry('new', new, ['read'])}\n")
    os.utime(file, ns=(1, 1))  # a new stamp whatever the clock's resolution
    tokens._checked = float("-inf")
    assert tokens.match(new) is not None and tokens.match(old) is not None
    file.write_text(f"{entry('new', new, ['read'])}\n")
    tokens._checked = float("-inf")
    assert tokens.match(old) is None and tokens.match(new) is not None
    file.write_text("broken")
    tokens._checked = float("-inf")
    assert tokens.match(new) is not None, "a broken file keeps the tokens read last"


def test_a_broken_entry_stops_the_worker_at_start(tmp_path: Path) -> None:
    with pytest.raises(TokenConfigError):
        Tokens(Settings(api_tokens="nope"))
    with pytest.raises(TokenConfigError, match="MIS_API_TOKENS_FILE"):
        Tokens(Settings(api_tokens_file=tmp_path / "missing"))


# --------------------------------------------------------------------------- rate
def test_the_bucket_allows_a_burst_then_the_rate() -> None:
    now = [100.0]
    limiter = RateLimiter(rate_per_s=2.0, burst=3, clock=lambda: now[0])
    assert [limiter.take("a") for _ in range(3)] == [None, None, None]
    wait = limiter.take("a")
    assert wait == pytest.approx(0.5)
    assert limiter.take("b") is None, "each token has its own bucket"
    now[0] += 0.5
    assert limiter.take("a") is None and limiter.take("a") is not None
    now[0] += 60
    assert [limiter.take("a") for _ in range(4)] == [None, None, None, pytest.approx(0.5)]


# --------------------------------------------------------------------------- over HTTP
Call = Callable[..., Awaitable[tuple[int, dict[str, str], Any]]]


def serve(config: Settings, scenario: Callable[[Call], Awaitable[None]]) -> None:
    async def ok(request: web.Request) -> web.Response:
        return web.json_response({"success": True, "caller": request.get(auth.CALLER)})

    app = web.Application(middlewares=[api_middleware(config, Guard.from_settings(config))])
    for method, path in [*auth.OPERATION_SCOPES, *auth.PUBLIC]:
        app.router.add_route(method, path, ok)

    async def main() -> None:
        async with TestClient(TestServer(app)) as client:

            async def call(
                method: str, path: str, token: str | None = None, **kwargs: Any
            ) -> tuple[int, dict[str, str], Any]:
                headers = dict(kwargs.pop("headers", {}))
                if token is not None:
                    headers["Authorization"] = f"Bearer {token}"
                resp = await client.request(method, path, headers=headers, **kwargs)
                body = await resp.json(content_type=None)
                return resp.status, dict(resp.headers), body

            await scenario(call)

    asyncio.run(main())


def problem(status: int, headers: dict[str, str], body: Any, expected: int) -> str:
    assert status == expected, body
    assert headers["Content-Type"].startswith("application/problem+json")
    parsed = ProblemResponse.model_validate(body)
    assert parsed.status == expected and parsed.detail == parsed.error and not parsed.success
    return parsed.detail


def test_no_token_or_a_bad_one_is_401_with_a_bearer_challenge() -> None:
    async def scenario(call: Call) -> None:
        for headers in ({}, {"Authorization": "Basic dXNlcjpwdw=="}, {"Authorization": "Bearer"}):
            status, h, body = await call("GET", SNAPSHOT, headers=headers)
            problem(status, h, body, 401)
            assert h["WWW-Authenticate"].startswith('Bearer realm="market-snapshots"')
        bad = new_token()
        status, h, body = await call("GET", SNAPSHOT, bad)
        assert bad not in problem(status, h, body, 401)
        assert 'error="invalid_token"' in h["WWW-Authenticate"]
        for method, path in (("GET", "/openapi.json"), ("GET", "/metrics"), ("GET", "/nothing")):
            status, h, body = await call(method, path)
            problem(status, h, body, 401)
        status, _, body = await call("GET", "/health")
        assert status == 200

    serve(settings(), scenario)


def test_a_token_without_the_scope_is_403_and_with_it_passes() -> None:
    async def scenario(call: Call) -> None:
        assert (await call("GET", SNAPSHOT, READER))[0] == 200
        status, h, body = await call("POST", PUBLISH, READER)
        assert "'publish'" in problem(status, h, body, 403)
        assert 'scope="publish"' in h["WWW-Authenticate"]
        status, _, body = await call("POST", PUBLISH, WRITER)
        assert status == 200 and body["caller"] == "writer"
        for method, path in (
            ("POST", "/storage-guard/snapshots/sync-all"),
            ("POST", "/storage-guard/bookings"),
            ("GET", "/storage-guard/jobs/00000000-0000-0000-0000-000000000001"),
            ("GET", "/metrics"),
        ):
            problem(*(await call(method, path, WRITER)), 403)
            assert (await call(method, path, ADMIN))[0] == 200
        assert (await call("GET", "/openapi.json", READER))[0] == 200  # any valid token

    serve(settings(), scenario)


def test_unknown_paths_and_methods_need_a_token_before_they_are_named() -> None:
    async def scenario(call: Call) -> None:
        problem(*(await call("DELETE", "/health")), 401)
        status, h, _body = await call("DELETE", "/health", READER)
        assert status == 405 and h["Allow"] == "GET"
        assert (await call("GET", "/nothing", READER))[0] == 404

    serve(settings(), scenario)


def test_metrics_can_be_served_without_a_token_by_setting() -> None:
    async def scenario(call: Call) -> None:
        assert (await call("GET", "/metrics"))[0] == 200
        problem(*(await call("GET", "/openapi.json")), 401)

    serve(settings(api_metrics_public=True), scenario)


def test_writes_past_the_rate_are_429_with_retry_after_per_token() -> None:
    async def scenario(call: Call) -> None:
        assert [(await call("POST", PUBLISH, WRITER))[0] for _ in range(2)] == [200, 200]
        status, h, body = await call("POST", PUBLISH, WRITER)
        problem(status, h, body, 429)
        assert int(h["Retry-After"]) >= 1
        assert (await call("GET", SNAPSHOT, WRITER))[0] == 200, "reads are not limited"
        assert (await call("POST", PUBLISH, ADMIN))[0] == 200, "another token, another bucket"
        # Refused before its body is read: an oversized announced body is still a 401.
        problem(*(await call("POST", PUBLISH, data=b"x" * 70_000)), 401)

    serve(settings(api_write_rate_per_s=0.01, api_write_burst=2), scenario)


def test_no_token_configured_refuses_everything_but_health() -> None:
    async def scenario(call: Call) -> None:
        problem(*(await call("GET", SNAPSHOT, READER)), 401)
        assert (await call("GET", "/health"))[0] == 200

    serve(Settings(api_tokens=""), scenario)


def test_mis_token_create_prints_a_token_and_the_entry_that_accepts_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from streams.cli import main

    assert main(["token", "create", "--name", "ci", "--scopes", "read,publish"]) == 0
    token, line = capsys.readouterr().out.splitlines()
    assert line == entry("ci", token, ["publish", "read"]) and token not in line
    found = Tokens(Settings(api_tokens=line)).match(token)
    assert found is not None and found.scopes == {"read", "publish"}
    assert main(["token", "create", "--scopes", "read,root"]) == 2
    assert main(["token", "create", "--name", "a b", "--scopes", "read"]) == 2
