"""No input reaches a 500: a Hypothesis property over every gateway route — method, path,
body and the headers that carry meaning (Authorization with tokens whose claims take any JSON
value, X-API-Key, Callback-Url with hosts in every odd shape, Idempotency-Key, Prefer,
Content-Type, X-Forwarded-For, traceparent). Every answer is below 500, or a 503 problem; every
4xx is application/problem+json with its status. On both stacks (PostgreSQL refuses what SQLite
takes)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import socket
import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.auth import hash_api_key
from tests.gateway.conftest import MakeGateway, RunningGateway, order

API_KEY = "fuzz-key"
SECRET = "fuzz-token-secret"

# Header values as a client can send them: latin-1 bytes without CR, LF or NUL.
latin1 = st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f")
header_text = st.text(latin1, max_size=80)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | header_text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(header_text, inner, max_size=3),
    max_leaves=8,
)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def token(claims: Any, alg: Any = "HS256") -> str:
    head = b64(orjson.dumps({"alg": alg, "typ": "JWT"}))
    body = b64(orjson.dumps(claims))
    signature = hmac.new(SECRET.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(signature)}"


claims = st.fixed_dictionaries(
    {
        "sub": st.one_of(st.just("svc"), header_text, json_values),
        "exp": st.one_of(st.just(time.time() + 3600), json_values),
    },
    optional={
        "nbf": json_values,
        "sagas": st.one_of(
            st.lists(st.sampled_from(["place-order", "x"])),
            st.lists(json_values, max_size=3),
            json_values,
        ),
    },
)
authorization = st.one_of(
    st.builds(lambda c: f"Bearer {token(c)}", claims),
    st.builds(lambda c, alg: f"Bearer {token(c, alg)}", claims, json_values),
    st.builds(lambda t: f"Bearer {t}", header_text),
    st.builds(lambda t: f"ApiKey {t}", st.one_of(st.just(API_KEY), header_text)),
    header_text,
)
labels = st.one_of(
    st.sampled_from(["", "a" * 64, "-a", "a-", "xn--", "xn--zz", "_x", "localhost", "é", "\x80"]),
    st.from_regex(r"[a-z0-9-]{1,10}", fullmatch=True),
    header_text.map(lambda t: t[:10]),
)
hosts = st.one_of(
    st.lists(labels, min_size=1, max_size=4).map(".".join),
    st.sampled_from(
        [
            "[2002:7f00:1::1]",
            "[64:ff9b::a9fe:a9fe]",
            "[::ffff:127.0.0.1]",
            "[fe80::1%25eth0]",
            "[::1",
            "[zz::]",
            "0x7f.1",
            "1.1.1.1",
            "public.example.com",
        ]
    ),
)
callback_urls = st.one_of(
    st.builds(
        lambda scheme, host, port, path: f"{scheme}://{host}{port}{path}",
        st.sampled_from(["https", "http", "ftp", "HTTPS", ""]),
        hosts,
        st.sampled_from(["", ":443", ":0", ":99999", ":x", ":-1"]),
        st.sampled_from(["/", "/hook?a=b", "", "/#f", "/\\x"]),
    ),
    header_text,
)
prefer = st.one_of(
    st.sampled_from(["respond-async", "wait=0.1", "respond-async, wait=5", "wait=-1", "wait=nan"]),
    st.builds(lambda t: f"wait={t}", header_text),
    header_text,
)
credentials = st.one_of(
    st.just({"X-API-Key": API_KEY}),
    claims.map(lambda c: {"Authorization": f"Bearer {token(c)}"}),
    authorization.map(lambda value: {"Authorization": value}),
    header_text.map(lambda value: {"X-API-Key": value}),
    st.just({}),
)
content_types = st.one_of(
    st.just("application/json"),
    st.just("application/json; charset=utf-8"),
    st.sampled_from(["application/merge-patch+json", "text/plain", "", "json"]),
)
optional_headers = st.fixed_dictionaries(
    {},
    optional={
        "Callback-Url": callback_urls,
        "Idempotency-Key": st.one_of(header_text, st.text(latin1, min_size=200, max_size=400)),
        "Prefer": prefer,
        "X-Forwarded-For": header_text,
        "traceparent": header_text,
        "If-None-Match": header_text,
    },
)
headers = st.builds(
    lambda creds, content_type, others: {
        name: value.encode("latin-1")
        for name, value in {**creds, "Content-Type": content_type, **others}.items()
    },
    credentials,
    content_types,
    optional_headers,
)
bodies = st.one_of(
    st.just(orjson.dumps(order())),
    st.just(orjson.dumps(order())),
    st.builds(
        lambda extra: orjson.dumps({**order(), **extra}),
        st.dictionaries(header_text, json_values, max_size=3),
    ),
    json_values.map(orjson.dumps),
    st.binary(max_size=100),
)
# A valid start but for the callback headers: where the callback URL checks are reached.
callback_starts = st.builds(
    lambda url, others: {
        "X-API-Key": API_KEY.encode(),
        "Content-Type": b"application/json",
        "Callback-Url": url.encode("latin-1"),
        **{name: value.encode("latin-1") for name, value in others.items()},
    },
    callback_urls,
    st.fixed_dictionaries({}, optional={"Prefer": prefer, "Idempotency-Key": header_text}),
)
segment = header_text.map(lambda text: text[:60])
# Every route of the gateway, and what is not one: method, path and header strategies, and how
# many examples each gets.
ROUTES: dict[str, tuple[Any, Any, Any, int]] = {
    "start-by-route-table": (st.just("POST"), st.just("/api/v1/orders"), headers, 250),
    "start-by-saga-type": (
        st.just("POST"),
        st.one_of(st.just("/api/v1/sagas/place-order"), segment.map("/api/v1/sagas/{}".format)),
        headers,
        250,
    ),
    "start-with-callback": (
        st.just("POST"),
        st.sampled_from(["/api/v1/orders", "/api/v1/sagas/place-order"]),
        callback_starts,
        150,
    ),
    "request-status": (
        st.just("GET"),
        st.one_of(st.uuids().map(str), segment).map("/api/v1/requests/{}".format),
        headers,
        100,
    ),
    "operations": (
        st.just("GET"),
        st.sampled_from(["/healthz", "/readyz", "/openapi.json", "/metrics"]),
        headers,
        40,
    ),
    "no-such-route": (
        st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH"]),
        st.one_of(st.just("/api/v1/orders"), segment.map("/{}".format)),
        headers,
        40,
    ),
}


def fake_getaddrinfo(real: Any) -> Any:
    """No DNS here: `*.example.com` resolves to a public address, other names do not resolve,
    after the same IDNA encoding the real resolver applies (where odd names used to fail)."""

    def resolve(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(host, str):
            try:
                socket.inet_pton(socket.AF_INET6 if ":" in host else socket.AF_INET, host)
                return real(host, port, *args, **kwargs)
            except OSError:
                pass
            host.encode("idna")
            if host.endswith(".example.com"):
                return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("1.1.1.1", int(port or 0)))]
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    return resolve


@pytest.fixture
def no_dns(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(socket, "getaddrinfo", fake_getaddrinfo(socket.getaddrinfo))
    yield


@pytest.fixture
async def fuzzed(make_gateway: MakeGateway, no_dns: None) -> RunningGateway:
    running = await make_gateway(
        "gw-fuzz-headers",
        api_keys={"fuzzer": hash_api_key(API_KEY)},
        bearer_secret=SECRET,
        callback_allowed_hosts=["*", "127.0.0.1"],
        gateway_default_wait_s=0.05,
        gateway_max_wait_s=0.05,
        auth_failure_burst=0,
        callback_max_attempts=1,
    )
    return running


async def check_route(
    running: RunningGateway, method: str, path: str, request_headers: dict[str, bytes], body: bytes
) -> None:
    """One request: answered below 500 (or 503), every 4xx and 5xx a problem+json."""
    response = await running.client.request(
        method,
        path.replace("?", "%3F").replace("#", "%23"),
        headers=[(name.encode(), value) for name, value in request_headers.items()],
        content=body if method in ("POST", "PUT", "PATCH") else None,
    )
    assert response.status_code < 500 or response.status_code == 503, (
        method,
        path,
        request_headers,
        response.status_code,
        response.text[:500],
    )
    if response.status_code >= 400:
        assert response.headers["content-type"] == "application/problem+json", response.text
        assert response.json()["status"] == response.status_code


def never_500(route: str) -> Any:
    """The property for one route: Hypothesis runs each example on the test's event loop (so
    generating the next one never overlaps the gateway's own tasks)."""
    methods, paths, request_headers, examples = ROUTES[route]

    @settings(
        max_examples=examples,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
        database=None,
    )
    @given(method=methods, path=paths, request_headers=request_headers, body=bodies)
    async def test(
        fuzzed: RunningGateway,
        method: str,
        path: str,
        request_headers: dict[str, bytes],
        body: bytes,
    ) -> None:
        await check_route(fuzzed, method, path, request_headers, body)

    return test


test_starting_through_the_route_table_is_never_answered_500 = never_500("start-by-route-table")
test_starting_by_saga_type_is_never_answered_500 = never_500("start-by-saga-type")
test_any_callback_url_is_never_answered_500 = never_500("start-with-callback")
test_reading_a_request_is_never_answered_500 = never_500("request-status")
test_the_operations_routes_are_never_answered_500 = never_500("operations")
test_what_is_no_route_is_never_answered_500 = never_500("no-such-route")
