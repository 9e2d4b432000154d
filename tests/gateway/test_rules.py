"""The gateway's pure rules: Prefer parsing, callback URL checks, token buckets, credentials
and signatures — no server needed."""

from __future__ import annotations

import ipaddress

import pytest
from pydantic import SecretStr
from starlette.datastructures import Headers

from gateway.auth import hash_api_key, issue_token
from gateway.callbacks import backoff_s, pinned_url, sign, verify_signature
from gateway.origins import choose_origin, parse_prefer
from gateway.problems import BadRequest, CallbackRefused, RateLimited
from gateway.ratelimit import RateLimiter
from gateway.ssrf import CallbackTarget, check_callback_url, parse_callback_url
from sagaway.settings import ApiKeyConfig, GatewaySettings


def test_prefer_header_parsing() -> None:
    assert parse_prefer(None) == (False, None)
    assert parse_prefer("respond-async") == (True, None)
    assert parse_prefer("wait=5, respond-async") == (True, 5.0)
    assert parse_prefer('return=minimal; foo, wait="2.5"') == (False, 2.5)
    with pytest.raises(BadRequest):
        parse_prefer("wait=-1")


def test_sync_wait_is_capped_by_the_configured_maximum() -> None:
    settings = GatewaySettings(gateway_default_wait_s=30, gateway_max_wait_s=60)
    assert choose_origin(Headers({}), settings).wait_s == 30
    assert choose_origin(Headers({"prefer": "wait=5"}), settings).wait_s == 5
    assert choose_origin(Headers({"prefer": "wait=3600"}), settings).wait_s == 60
    assert choose_origin(Headers({"prefer": "respond-async"}), settings).mode == "async"


def test_callback_needs_a_configured_secret() -> None:
    with pytest.raises(CallbackRefused):
        choose_origin(Headers({"callback-url": "https://example.com/x"}), GatewaySettings())
    origin = choose_origin(
        Headers({"callback-url": "https://example.com/x"}),
        GatewaySettings(callback_secret=SecretStr("s")),
    )
    assert (origin.mode, origin.reply_mode) == ("callback", "async")


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://evil.com/x", ["*.example.com"]),
        ("https://example.com.evil.com/x", ["*.example.com"]),
        ("http://api.example.com/x", ["*.example.com"]),  # http only for hosts listed exactly
        ("https://user:pw@api.example.com/x", ["*"]),
        ("https://api.example.com:99999/x", ["*"]),
        ("javascript:alert(1)", ["*"]),
        ("https:///x", ["*"]),
    ],
)
def test_callback_urls_outside_the_allow_list_are_refused(url: str, allowed: list[str]) -> None:
    with pytest.raises(CallbackRefused):
        parse_callback_url(url, allowed)


def test_callback_urls_inside_the_allow_list_pass() -> None:
    assert parse_callback_url("https://api.example.com/x", ["*.example.com"]) == (
        "https",
        "api.example.com",
        443,
    )
    assert parse_callback_url("http://127.0.0.1:8080/x", ["127.0.0.1"]) == (
        "http",
        "127.0.0.1",
        8080,
    )


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        "10.0.0.1",
        "192.168.1.1",
        "172.16.0.1",
        "169.254.169.254",
        "[::1]",
        "[fe80::1]",
        "224.0.0.1",
        "0.0.0.0",
        "[::ffff:127.0.0.1]",
        "100.64.0.1",
    ],
)
async def test_non_public_addresses_are_refused_unless_listed_exactly(host: str) -> None:
    with pytest.raises(CallbackRefused):
        await check_callback_url(f"https://{host}/x", ["*"])
    plain = host.strip("[]")
    target = await check_callback_url(f"https://{host}/x", [plain])
    assert [ipaddress.ip_address(a) for a in target.addresses] == [ipaddress.ip_address(plain)]


def test_the_post_goes_to_the_checked_address_with_tls_on_the_host_name() -> None:
    url, extensions = pinned_url(
        CallbackTarget(
            "https://api.example.com/hook?a=1", "https", "api.example.com", 443, ("93.184.216.34",)
        )
    )
    assert url == "https://93.184.216.34/hook?a=1"
    assert extensions == {"sni_hostname": "api.example.com"}


def test_token_bucket_allows_the_burst_then_refills_at_the_rate() -> None:
    now = [0.0]
    limiter = RateLimiter(rate=2, burst=3, clock=lambda: now[0])
    for _ in range(3):
        limiter.take("k")
    with pytest.raises(RateLimited) as refused:
        limiter.take("k")
    assert refused.value.retry_after == 1
    limiter.take("other")  # buckets are per caller
    now[0] += 0.5
    limiter.take("k")
    with pytest.raises(RateLimited):
        limiter.take("k")


def test_signature_round_trip_and_tampering() -> None:
    body = b'{"id": "x"}'
    header = sign("secret", body)
    assert verify_signature("secret", header, body)
    assert not verify_signature("secret", header, body + b" ")
    assert not verify_signature("secret", sign("secret", body, timestamp=1), body)
    assert not verify_signature("secret", "garbage", body)


def test_backoff_doubles_up_to_the_cap() -> None:
    settings = GatewaySettings(callback_backoff_s=1, callback_backoff_max_s=5)
    assert [backoff_s(settings, n) for n in (1, 2, 3, 4)] == [1, 2, 4, 5]


async def test_api_key_hashes_and_tokens() -> None:
    from argon2 import PasswordHasher
    from starlette.requests import Request

    from gateway.auth import Authenticator

    settings = GatewaySettings(
        api_keys={
            "a": ApiKeyConfig(hash=hash_api_key("ka")),
            "b": ApiKeyConfig(hash=PasswordHasher().hash("kb")),
        },
        bearer_secret=SecretStr("s"),
    )
    auth = Authenticator(settings)

    def request(headers: dict[str, str]) -> Request:
        raw = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
        return Request({"type": "http", "headers": raw})

    assert (await auth.authenticate(request({"X-API-Key": "ka"}))).principal == "a"
    assert (await auth.authenticate(request({"Authorization": "ApiKey kb"}))).principal == "b"
    token = issue_token("s", "svc", sagas=["place-order"])
    identity = await auth.authenticate(request({"Authorization": f"Bearer {token}"}))
    assert identity.principal == "svc" and identity.sagas == frozenset({"place-order"})


def test_trace_context_is_kept_when_well_formed_else_started() -> None:
    from gateway.routes import traceparent

    given = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    assert traceparent(given) == given
    for bad in (None, "", "garbage", "00-xyz-abc-01", given + "\nx: y"):
        made = traceparent(bad)
        assert made != bad and made.startswith("00-") and len(made) == 55
