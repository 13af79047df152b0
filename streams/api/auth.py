"""Who may call the API: bearer tokens with scopes, a write rate per token.

A token is 32 random bytes (``mis_`` + URL-safe base64) handed to one caller. The worker keeps
only its SHA-256: a token has 256 bits of entropy, so a fast unsalted hash cannot be reversed
by guessing, and a leaked configuration grants nothing. A presented token is hashed and compared
with every configured digest in constant time (``hmac.compare_digest``), so neither the answer
nor its timing says how much of a digest matched.

Configuration: ``name:sha256-hex:scope,scope`` entries, separated by whitespace, in
MIS_API_TOKENS and/or one per line in MIS_API_TOKENS_FILE (``#`` starts a comment). Several
entries may be valid at once, which is how a token is rotated: add the new one, hand it out,
remove the old one. The file is read again when it changes, so rotating needs no restart.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import os
import re
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from streams.api.errors import Forbidden, TooManyRequests, Unauthorized
from streams.api.ratelimit import RateLimiter
from streams.config import Settings
from streams.errors import PipelineError

log = logging.getLogger(__name__)

READ, PUBLISH, OPERATE, METRICS = "read", "publish", "operate", "metrics"
SCOPES = frozenset({READ, PUBLISH, OPERATE, METRICS})
TOKEN_PREFIX = "mis_"
REALM = "market-snapshots"

SNAPSHOT = "/storage-guard/snapshots/{booking_id}"
#: (METHOD, route) -> the scope it needs; None: any valid token. The OpenAPI document declares
#: the same (tests compare the two with the routes).
OPERATION_SCOPES: dict[tuple[str, str], str | None] = {
    ("GET", SNAPSHOT): READ,
    ("GET", SNAPSHOT + "/history"): READ,
    ("GET", "/storage-guard/locations/{location_id}/trends"): READ,
    ("GET", "/storage-guard/listing-changes/stream"): READ,
    ("POST", SNAPSHOT + "/publish"): PUBLISH,
    ("POST", SNAPSHOT + "/reconcile"): OPERATE,
    ("POST", "/storage-guard/snapshots/sync-all"): OPERATE,
    ("GET", "/storage-guard/jobs/{job_id}"): OPERATE,
    ("POST", "/storage-guard/bookings"): OPERATE,
    ("GET", "/metrics"): METRICS,
    ("GET", "/openapi.json"): None,
}
#: answered to anyone: /health, which a load balancer or an orchestrator probes without a token,
#: and the live page, which holds no data (the stream it reads needs a token)
PUBLIC = frozenset({("GET", "/health"), ("GET", "/storage-guard/live")})
METRICS_ROUTE = ("GET", "/metrics")

#: the name of the token a request was authenticated with
CALLER = web.RequestKey("caller", str)

TOKEN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_DIGEST = re.compile(r"[0-9a-f]{64}")


class TokenConfigError(PipelineError):
    """An entry of MIS_API_TOKENS or MIS_API_TOKENS_FILE that cannot be used."""


@dataclass(frozen=True)
class Token:
    """One configured token: its name (for logs), its digest, what it may do."""

    name: str
    digest: bytes
    scopes: frozenset[str]


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def entry(name: str, token: str, scopes: Iterable[str]) -> str:
    """The configuration line of a token."""
    return f"{name}:{digest(token)}:{','.join(sorted(set(scopes)))}"


def parse_entries(text: str, where: str) -> list[Token]:
    tokens: list[Token] = []
    for number, line in enumerate(text.splitlines(), 1):
        for item in line.split("#", 1)[0].split():
            tokens.append(_parse_entry(item, f"{where}, line {number}"))
    return tokens


def _parse_entry(item: str, where: str) -> Token:
    parts = item.split(":")
    # The message names the entry by position and name only: never echo what might be a token.
    if len(parts) != 3:
        raise TokenConfigError(f"{where}: an entry is name:sha256-hex:scopes ({len(parts)} parts)")
    name, hexdigest, scope_list = parts
    if not TOKEN_NAME.fullmatch(name):
        raise TokenConfigError(f"{where}: a token name is 1-64 letters, digits, '.', '_', '-'")
    if not _DIGEST.fullmatch(hexdigest):
        raise TokenConfigError(
            f"{where}: token {name}: the digest is 64 lowercase hex digits (`mis token create`)"
        )
    scopes = frozenset(s for s in scope_list.split(",") if s)
    unknown = scopes - SCOPES
    if not scopes or unknown:
        raise TokenConfigError(
            f"{where}: token {name}: scopes are some of {', '.join(sorted(SCOPES))}"
            + (f", not {', '.join(sorted(unknown))}" if unknown else "")
        )
    return Token(name=name, digest=bytes.fromhex(hexdigest), scopes=scopes)


class Tokens:
    """The configured tokens: MIS_API_TOKENS, plus MIS_API_TOKENS_FILE read again on change."""

    RECHECK_S = 1.0

    def __init__(self, settings: Settings) -> None:
        self._inline = parse_entries(settings.api_tokens.get_secret_value(), "MIS_API_TOKENS")
        self._file: Path | None = settings.api_tokens_file
        self._from_file: list[Token] = []
        self._stamp: tuple[int, int] | None = None
        self._checked = float("-inf")
        self._load_file(strict=True)

    def _load_file(self, *, strict: bool) -> None:
        if self._file is None:
            return
        try:
            stat = os.stat(self._file)
            stamp = (stat.st_mtime_ns, stat.st_size)
            if stamp == self._stamp:
                return
            tokens = parse_entries(self._file.read_text(), str(self._file))
        except (OSError, TokenConfigError) as exc:
            if strict:
                raise TokenConfigError(f"MIS_API_TOKENS_FILE: {exc}") from exc
            # Keep serving with the tokens read last rather than lock every caller out.
            log.error("token file not reloaded path=%s error=%s", self._file, exc)
            return
        self._check_names([*self._inline, *tokens])
        self._from_file, self._stamp = tokens, stamp
        if not strict:
            log.info("token file reloaded path=%s tokens=%d", self._file, len(tokens))

    @staticmethod
    def _check_names(tokens: list[Token]) -> None:
        seen: set[str] = set()
        for t in tokens:
            if t.name in seen:
                raise TokenConfigError(f"token name {t.name} is configured twice")
            seen.add(t.name)

    def all(self) -> list[Token]:
        now = time.monotonic()
        if self._file is not None and now - self._checked >= self.RECHECK_S:
            self._checked = now
            self._load_file(strict=False)
        return [*self._inline, *self._from_file]

    def match(self, presented: str) -> Token | None:
        wanted = hashlib.sha256(presented.encode("utf-8", "replace")).digest()
        found: Token | None = None
        # Every digest is compared, whatever matched before: the time taken says nothing.
        for token in self.all():
            if hmac.compare_digest(wanted, token.digest):
                found = token
        return found


def _challenge(error: str | None = None, **params: str) -> dict[str, str]:
    fields = [f'realm="{REALM}"']
    if error is not None:
        fields.append(f'error="{error}"')
    fields += [f'{k}="{v}"' for k, v in params.items()]
    return {"WWW-Authenticate": "Bearer " + ", ".join(fields)}


def bearer(header: str | None) -> str:
    """The token of an ``Authorization: Bearer`` header; 401 without one."""
    if not header:
        raise Unauthorized("this operation needs a bearer token", _challenge())
    scheme, _, value = header.strip().partition(" ")
    value = value.strip()
    if scheme.lower() != "bearer" or not value or " " in value:
        raise Unauthorized(
            "the Authorization header must be 'Bearer <token>'", _challenge("invalid_request")
        )
    return value


def _route(request: web.Request) -> tuple[str, str] | None:
    resource = request.match_info.route.resource
    return (request.method, resource.canonical) if resource is not None else None


class Guard:
    """Authenticate, check the operation's scope, then the token's write rate.

    Called first for every request (streams.api.middleware), before anything reads its body.
    A path no route serves (404, 405) needs a valid token too: without one it answers 401, so
    the API does not describe itself to a stranger.
    """

    def __init__(self, settings: Settings, tokens: Tokens, limiter: RateLimiter) -> None:
        self._settings, self._tokens, self._limiter = settings, tokens, limiter

    def __call__(self, request: web.Request) -> None:
        settings = self._settings
        route = _route(request)
        if route in PUBLIC or (route == METRICS_ROUTE and settings.api_metrics_public):
            return
        token = self._tokens.match(bearer(request.headers.get("Authorization")))
        if token is None:
            log.info("refused status=401 method=%s path=%s", request.method, request.path[:200])
            raise Unauthorized(
                "the bearer token is not one this API accepts", _challenge("invalid_token")
            )
        needed = OPERATION_SCOPES.get(route) if route is not None else None
        if needed is not None and needed not in token.scopes:
            log.info(
                "refused status=403 token=%s scope=%s method=%s path=%s",
                token.name,
                needed,
                request.method,
                request.path[:200],
            )
            raise Forbidden(
                f"this operation needs the scope {needed!r}",
                _challenge("insufficient_scope", scope=needed),
            )
        request[CALLER] = token.name
        if request.method == "POST":
            wait = self._limiter.take(token.name)
            if wait is not None:
                seconds = str(max(1, math.ceil(wait)))
                raise TooManyRequests(
                    f"write rate of {settings.api_write_rate_per_s:g}/s "
                    f"(burst {settings.api_write_burst}) spent; retry in {seconds}s",
                    {"Retry-After": seconds},
                )
            log.info(
                "write token=%s method=%s path=%s", token.name, request.method, request.path[:200]
            )

    @classmethod
    def from_settings(cls, settings: Settings) -> Guard:
        limiter = RateLimiter(settings.api_write_rate_per_s, settings.api_write_burst)
        tokens = Tokens(settings)
        configured = tokens.all()
        if not configured:
            log.warning(
                "no API token configured (MIS_API_TOKENS, MIS_API_TOKENS_FILE): every endpoint "
                "but /health answers 401; `mis token create` makes one"
            )
        else:
            log.info("API tokens configured names=%s", ",".join(t.name for t in configured))
        return cls(settings, tokens, limiter)
