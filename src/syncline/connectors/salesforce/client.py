"""Salesforce's wire: OAuth 2.0 access tokens, the daily API budget and exact JSON bodies.

A connected app hands out bearer tokens at ``POST /services/oauth2/token``, either for its own
integration user (client credentials flow)::

    grant_type=client_credentials&client_id=3MVG9...&client_secret=...

or for a named user with a JWT signed by the app's certificate (JWT bearer flow)::

    grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer&assertion=eyJhbGciOiJSUzI1NiJ9...

and answers::

    {"access_token": "00D5g000004Ej6J!AQ8AQ...", "instance_url": "https://acme.my.salesforce.com",
     "id": "https://login.salesforce.com/id/00D5g000004Ej6JEAS/0055g00000DnWcLAAV",
     "token_type": "Bearer", "issued_at": "1732370000000", "signature": "5hV0..."}

Tokens have no announced lifetime: one is used until an API call answers ``401`` with
``[{"errorCode": "INVALID_SESSION_ID", ...}]``, then replaced once.

Every API answer carries the org's rolling daily allowance, ``Sforce-Limit-Info:
api-usage=123/15000``; :class:`ApiBudget` reads it and stops the connection before the
allowance is spent.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass

import httpx

from syncline.errors import AuthConfigError, ConfigError, RateLimitedError, TransientError

API_VERSION = "v61.0"
TOKEN_PATH = "/services/oauth2/token"  # noqa: S105  (a URL path, not a secret)
JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
CLIENT_CREDENTIALS_GRANT = "client_credentials"
LIMIT_HEADER = "Sforce-Limit-Info"
CALL_OPTIONS_HEADER = "Sforce-Call-Options"
#: JWT bearer assertions may live at most 3 minutes (Salesforce rejects longer ones).
JWT_LIFETIME_SECONDS = 180

# "api-usage=25/15000; per-app-api-usage=17/250(appName=sample-app)": the org-wide figure only
_API_USAGE = re.compile(r"(?<![\w-])api-usage=(\d+)/(\d+)")
_MAX_DETAIL = 300


def data_path(suffix: str) -> str:
    """Return ``/services/data/v61.0/<suffix>``."""
    return f"/services/data/{API_VERSION}/{suffix.lstrip('/')}"


@dataclass(frozen=True)
class ClientCredentials:
    """The client credentials flow: the connected app acts as its configured run-as user."""

    client_id: str
    client_secret: str

    def __repr__(self) -> str:
        return f"ClientCredentials(client_id={self.client_id!r})"

    def form(self, now: float) -> dict[str, str]:
        """Return the token request form."""
        return {"grant_type": CLIENT_CREDENTIALS_GRANT, "client_id": self.client_id,
                "client_secret": self.client_secret}


@dataclass(frozen=True)
class JwtBearer:
    """The JWT bearer flow: an RS256 assertion signed with the connected app's private key.

    ``audience`` is the login host (``https://login.salesforce.com``, ``https://test.salesforce.com``
    for sandboxes, or the My Domain URL); ``subject`` the username the integration acts as.
    """

    client_id: str
    subject: str
    audience: str
    private_key: str

    def __repr__(self) -> str:
        return f"JwtBearer(client_id={self.client_id!r}, subject={self.subject!r})"

    def assertion(self, now: float) -> str:
        """Return the signed assertion (PyJWT and cryptography come with ``syncline[salesforce]``)."""
        try:
            import jwt
        except ImportError:
            raise ConfigError(
                "the Salesforce JWT bearer flow needs PyJWT and cryptography: pip install 'syncline[salesforce]'"
            ) from None
        claims = {"iss": self.client_id, "sub": self.subject, "aud": self.audience,
                  "exp": int(now) + JWT_LIFETIME_SECONDS}
        try:
            return str(jwt.encode(claims, self.private_key, algorithm="RS256"))
        except (ValueError, TypeError, jwt.PyJWTError) as exc:
            raise AuthConfigError(f"cannot sign the Salesforce JWT assertion: {type(exc).__name__}",
                                  code="auth_config") from None

    def form(self, now: float) -> dict[str, str]:
        """Return the token request form."""
        return {"grant_type": JWT_BEARER_GRANT, "assertion": self.assertion(now)}


Grant = ClientCredentials | JwtBearer


@dataclass(frozen=True)
class AccessToken:
    """One access token and what came with it."""

    value: str
    instance_url: str | None
    #: the integration user's record id, from the identity URL ``.../id/<org id>/<user id>``
    user_id: str | None


class TokenAuth(httpx.Auth):
    """Authenticate requests with a cached bearer token, replaced once when the session dies.

    The first request fetches a token; a ``401 INVALID_SESSION_ID`` fetches a fresh one and
    sends the request again, once. A token endpoint that refuses the grant raises
    :class:`~syncline.errors.AuthConfigError` (the pipeline pauses the connection); one that
    fails with 5xx raises :class:`~syncline.errors.TransientError`.

    Several requests in flight when a session expires may each fetch a token; that costs a
    few token calls (which do not count against the API allowance) and nothing else.
    """

    requires_response_body = True

    def __init__(self, token_url: str, grant: Grant, *, clock: Callable[[], float] = time.time) -> None:
        self.token_url = token_url
        self._grant = grant
        self._clock = clock
        self.token: AccessToken | None = None
        self.fetches = 0

    def __repr__(self) -> str:
        # The default repr would show the token and secrets in tracebacks and logs.
        return f"TokenAuth(token_url={self.token_url!r}, grant={self._grant!r})"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        """Send ``request`` with a bearer token; on an expired session, refresh and resend once."""
        token = self.token if self.token is not None else (yield from self._fetch())
        request.headers["Authorization"] = f"Bearer {token.value}"
        response = yield request
        if response.status_code != 401:
            return
        self.token = None
        token = yield from self._fetch()
        request.headers["Authorization"] = f"Bearer {token.value}"
        # A second 401 goes back to the caller, which raises AuthConfigError.
        yield request

    def _fetch(self) -> Generator[httpx.Request, httpx.Response, AccessToken]:
        self.fetches += 1
        form = self._grant.form(self._clock())
        response = yield httpx.Request("POST", self.token_url, data=form, headers={"Accept": "application/json"})
        self.token = parse_token(response)
        return self.token


def parse_token(response: httpx.Response) -> AccessToken:
    """Return the token of a token endpoint answer, or raise the error class it calls for.

    A refusal looks like ``400 {"error": "invalid_client", "error_description": "invalid client
    credentials"}``; the description never contains the secret.
    """
    status = response.status_code
    try:
        body = response.json()
    except ValueError:
        body = None
    if status >= 500 or status == 429:
        raise TransientError(f"Salesforce token endpoint answered {status}", code="token_unavailable",
                             status=status)
    if status != 200 or not isinstance(body, Mapping) or not isinstance(body.get("access_token"), str):
        error = body.get("error") if isinstance(body, Mapping) else None
        described = body.get("error_description") if isinstance(body, Mapping) else None
        detail = f"{error}: {described}" if error else response.text[:_MAX_DETAIL]
        raise AuthConfigError(f"Salesforce refused the token request ({status} {detail})",
                              code="auth_config", status=status, vendor_code=error)
    identity = str(body.get("id") or "")
    user_id = identity.rstrip("/").rsplit("/", 1)[-1] if "/id/" in identity else None
    instance_url = body.get("instance_url")
    return AccessToken(str(body["access_token"]), str(instance_url) if instance_url else None, user_id)


@dataclass(frozen=True)
class ApiUsage:
    """The org's API calls used and allowed in the current 24-hour window."""

    used: int
    allowed: int

    @property
    def remaining(self) -> int:
        return max(0, self.allowed - self.used)


def parse_limit_info(value: str | None) -> ApiUsage | None:
    """Return the usage in ``Sforce-Limit-Info: api-usage=123/15000`` (None when absent)."""
    match = _API_USAGE.search(value or "")
    return ApiUsage(int(match.group(1)), int(match.group(2))) if match else None


class ApiBudget:
    """Stop calling Salesforce while the org's daily API allowance is at its reserve.

    The allowance is shared with every other integration of the org, so the connection stops
    while ``reserve`` calls are still left for them. Salesforce counts calls over a rolling
    24 hours and does not say when calls free up, so the connection lets one call through
    again after ``probe_seconds`` and reads the usage it reports. (A ``403
    REQUEST_LIMIT_EXCEEDED`` answer, when others spent the allowance, becomes a
    RateLimitedError carrying its ``Retry-After`` for the pipeline to wait on.)
    """

    def __init__(self, reserve: int = 0, probe_seconds: float = 3600.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.reserve = reserve
        self.probe_seconds = probe_seconds
        self._clock = clock
        self.usage: ApiUsage | None = None
        self.blocked_until: float | None = None

    def check(self) -> None:
        """Raise RateLimitedError (with the wait) while the allowance is spent."""
        if self.blocked_until is None:
            return
        wait = self.blocked_until - self._clock()
        if wait <= 0:
            # Probe: the next answer's Sforce-Limit-Info says whether calls freed up.
            self.blocked_until = None
            return
        used = f" ({self.usage.used}/{self.usage.allowed} used)" if self.usage else ""
        raise RateLimitedError(
            f"the Salesforce org's daily API allowance is spent down to its reserve of {self.reserve}{used}",
            retry_after=wait, code="api_budget_spent",
        )

    def observe(self, response: httpx.Response) -> None:
        """Record the usage an answer reports; block when the reserve is reached."""
        usage = parse_limit_info(response.headers.get(LIMIT_HEADER))
        if usage is None:
            return
        self.usage = usage
        if usage.remaining <= self.reserve:
            self.blocked_until = self._clock() + self.probe_seconds
        else:
            self.blocked_until = None
