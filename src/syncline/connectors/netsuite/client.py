"""NetSuite's wire: OAuth 1.0a token-based authentication and exact JSON bodies.

NetSuite's REST web services authenticate every request with an OAuth 1.0a header signed
with HMAC-SHA256 over the consumer and token secrets (RFC 5849, section 3.4)::

    Authorization: OAuth realm="123456_SB1", oauth_consumer_key="ef40...", oauth_token="2b0c...",
        oauth_signature_method="HMAC-SHA256", oauth_timestamp="1718000000", oauth_nonce="a9f3...",
        oauth_version="1.0", oauth_signature="k3x...%3D"

The JSON body is not part of the signature; only the method, the URL and its query are.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import time
from collections.abc import AsyncIterator, Callable, Generator, Iterable, Mapping
from typing import Any
from urllib.parse import parse_qsl, quote, unquote

import httpx

from syncline.connectors._json import dumps, loads
from syncline.connectors.netsuite.errors import error_from_response, transport_errors
from syncline.errors import TransientError

SUITEQL_PATH = "/services/rest/query/v1/suiteql"
#: NetSuite's largest SuiteQL page; ``offset`` must be a multiple of ``limit``.
SUITEQL_MAX_PAGE = 1000
_DEFAULT_PORTS = {"http": 80, "https": 443}
_HEADER_PARAM = re.compile(r'([A-Za-z_]+)="([^"]*)"')


def percent_encode(value: str) -> str:
    """Encode ``value`` as RFC 5849 wants: everything but ``A-Z a-z 0-9 - . _ ~`` escaped."""
    return quote(value, safe="-._~")


def realm_for(account_id: str) -> str:
    """Return the OAuth realm of an account id: ``123456-sb1`` (URL form) → ``123456_SB1``."""
    return account_id.strip().upper().replace("-", "_")


def base_string_uri(url: httpx.URL) -> str:
    """Return the RFC 5849 base string URI: lower-case scheme and host, no default port or query."""
    scheme = url.scheme.lower()
    host = url.host.lower()
    port = f":{url.port}" if url.port is not None and url.port != _DEFAULT_PORTS.get(scheme) else ""
    # Sign the path exactly as it travels (still percent-encoded), as the server will see it.
    path = url.raw_path.split(b"?", 1)[0].decode("ascii") or "/"
    return f"{scheme}://{host}{port}{path}"


def signature_base_string(
    method: str, url: httpx.URL, oauth_params: Mapping[str, str], extra_params: Iterable[tuple[str, str]] = ()
) -> str:
    """Return the signature base string of a request (RFC 5849, section 3.4.1).

    ``oauth_params`` are the protocol parameters without ``realm`` and ``oauth_signature``;
    the URL's query parameters are included, ``extra_params`` stands for form-encoded body
    parameters (NetSuite's JSON bodies have none).
    """
    query = parse_qsl(url.query.decode("ascii"), keep_blank_values=True)
    pairs = sorted(
        (percent_encode(name), percent_encode(value))
        for name, value in [*oauth_params.items(), *query, *extra_params]
    )
    normalized = "&".join(f"{name}={value}" for name, value in pairs)
    return "&".join(percent_encode(part) for part in (method.upper(), base_string_uri(url), normalized))


def sign(base_string: str, consumer_secret: str, token_secret: str) -> str:
    """Return the base64 HMAC-SHA256 signature of ``base_string`` under both secrets."""
    key = f"{percent_encode(consumer_secret)}&{percent_encode(token_secret)}".encode()
    digest = hmac.new(key, base_string.encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def parse_authorization(header: str) -> dict[str, str] | None:
    """Return the parameters of an ``OAuth ...`` header (values percent-decoded), or None."""
    scheme, _, rest = header.partition(" ")
    if scheme != "OAuth":
        return None
    return {name: unquote(value) for name, value in _HEADER_PARAM.findall(rest)}


class TokenAuth(httpx.Auth):
    """Sign each request with NetSuite token-based authentication (OAuth 1.0a, HMAC-SHA256)."""

    def __init__(
        self,
        account_id: str,
        consumer_key: str,
        consumer_secret: str,
        token_id: str,
        token_secret: str,
        *,
        nonce: Callable[[], str] | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.realm = realm_for(account_id)
        self._consumer_key = consumer_key
        self._consumer_secret = consumer_secret
        self._token_id = token_id
        self._token_secret = token_secret
        self._nonce = nonce or (lambda: secrets.token_hex(16))
        self._clock = clock or time.time

    def __repr__(self) -> str:
        # The default repr would show the secrets in tracebacks and logs.
        return f"TokenAuth(realm={self.realm!r})"

    def authorization(self, method: str, url: httpx.URL) -> str:
        """Return the ``Authorization`` header value for one request."""
        params = {
            "oauth_consumer_key": self._consumer_key,
            "oauth_token": self._token_id,
            "oauth_signature_method": "HMAC-SHA256",
            "oauth_timestamp": str(int(self._clock())),
            "oauth_nonce": self._nonce(),
            "oauth_version": "1.0",
        }
        signature = sign(signature_base_string(method, url, params), self._consumer_secret, self._token_secret)
        fields = [("realm", self.realm), *params.items(), ("oauth_signature", signature)]
        return "OAuth " + ", ".join(f'{name}="{percent_encode(value)}"' for name, value in fields)

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        """Add the signed header; NetSuite needs a fresh nonce and timestamp on every request."""
        request.headers["Authorization"] = self.authorization(request.method, request.url)
        yield request


async def suiteql(
    http: httpx.AsyncClient, query: str, *, page_size: int = SUITEQL_MAX_PAGE
) -> AsyncIterator[dict[str, Any]]:
    """Yield the rows of a SuiteQL ``query``, page by page (``limit``/``offset``).

    One page of ``POST /services/rest/query/v1/suiteql?limit=2&offset=0``::

        {"links": [...], "count": 2, "hasMore": true, "offset": 0, "totalResults": 5,
         "items": [{"links": [], "id": "7", "periodname": "Jan 2024", "closed": "T"}, ...]}

    Every value arrives as a string (booleans as ``"T"``/``"F"``, dates in the account's date
    format); a NULL column is left out of the row. The ``links`` of each row are dropped.
    """
    if not 1 <= page_size <= SUITEQL_MAX_PAGE:
        raise ValueError(f"page_size must be 1..{SUITEQL_MAX_PAGE}")
    offset = 0
    while True:
        with transport_errors("SuiteQL query"):
            response = await http.post(
                SUITEQL_PATH,
                params={"limit": page_size, "offset": offset},
                content=dumps({"q": query}),
                # Without "Prefer: transient" NetSuite refuses the query.
                headers={"Content-Type": "application/json", "Accept": "application/json", "Prefer": "transient"},
            )
        if response.status_code != 200:
            raise error_from_response(response)
        try:
            page = loads(response.content)
            items = page["items"]
            more = bool(page.get("hasMore"))
            if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
                raise TypeError("items is not a list of rows")
        except (ValueError, KeyError, TypeError) as exc:
            raise TransientError(f"SuiteQL answered an unreadable page at offset {offset}",
                                 code="netsuite_bad_page") from exc
        for item in items:
            yield {key: value for key, value in item.items() if key != "links"}
        if not more:
            return
        if not items:
            # "More" with an empty page would page forever.
            raise TransientError(f"SuiteQL answered an empty page with hasMore at offset {offset}",
                                 code="netsuite_bad_page")
        # offset must stay a multiple of limit, so step by the page size, not by len(items).
        offset += page_size
