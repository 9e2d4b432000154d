"""Bearer token claims are parsed strictly and fail closed: a claim of the wrong type is a 401
problem naming the claim — never every saga type, never a 500."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from typing import Any

import orjson
import pytest

from gateway.auth import issue_token
from tests.gateway.conftest import MakeGateway, RunningGateway, order

SECRET = "token-secret"


@pytest.fixture
def stack() -> str:
    return "embedded"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def signed(claims: Any, header: Any = None) -> str:
    """A token with exactly these claims, correctly signed with SECRET."""
    head = b64(orjson.dumps(header if header is not None else {"alg": "HS256", "typ": "JWT"}))
    body = b64(orjson.dumps(claims))
    signature = hmac.new(SECRET.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(signature)}"


def claims(**values: Any) -> dict[str, Any]:
    return {"sub": "svc", "exp": int(time.time()) + 600, **values}


async def start(running: RunningGateway, token: str) -> Any:
    return await running.client.post(
        "/api/v1/orders",
        json=order(),
        headers={"Authorization": f"Bearer {token}", "Prefer": "respond-async"},
    )


WRONG_SAGAS = [
    "place-order",
    "",
    {"place-order": True},
    [["place-order"]],
    [{"saga": "place-order"}],
    ["place-order", 7],
    None,
    True,
    7,
]


@pytest.mark.parametrize("sagas", WRONG_SAGAS, ids=repr)
async def test_a_sagas_claim_that_is_not_a_list_of_names_is_refused_naming_it(
    make_gateway: MakeGateway, sagas: Any
) -> None:
    running = await make_gateway("gw-claims", bearer_secret=SECRET)
    answer = await start(running, signed(claims(sagas=sagas)))
    assert answer.status_code == 401, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    problem = answer.json()
    assert problem["claim"] == "sagas"
    assert "'sagas'" in problem["detail"]


# Built at collection: far enough ahead that a long run never reaches them.
LATER = time.time() + 2 * 365 * 86_400
SOONER_THAN_LATER = time.time() + 365 * 86_400
WRONG_CLAIMS = [
    ({"sub": ["svc"], "exp": LATER}, "sub"),
    ({"sub": "", "exp": LATER}, "sub"),
    ({"sub": "svc\x00", "exp": LATER}, "sub"),
    ({"sub": "x" * 201, "exp": LATER}, "sub"),
    ({"sub": "svc", "exp": "tomorrow"}, "exp"),
    ({"sub": "svc", "exp": True}, "exp"),
    ({"sub": "svc"}, "exp"),
    ({"sub": "svc", "exp": LATER, "nbf": "now"}, "nbf"),
    ({"sub": "svc", "exp": LATER, "nbf": SOONER_THAN_LATER}, "nbf"),
]


@pytest.mark.parametrize(
    ("token_claims", "claim"),
    WRONG_CLAIMS,
    ids=[f"{c}-{n}" for n, (_, c) in enumerate(WRONG_CLAIMS)],
)
async def test_every_claim_of_the_wrong_type_is_refused_naming_it(
    make_gateway: MakeGateway, token_claims: dict[str, Any], claim: str
) -> None:
    running = await make_gateway("gw-claims", bearer_secret=SECRET)
    answer = await start(running, signed(token_claims))
    assert answer.status_code == 401, answer.text
    assert answer.json()["claim"] == claim


async def test_well_formed_claims_are_honoured(make_gateway: MakeGateway) -> None:
    running = await make_gateway("gw-claims", bearer_secret=SECRET)
    assert (await start(running, issue_token(SECRET, "svc"))).status_code == 202
    allowed = issue_token(SECRET, "svc", sagas=["place-order"])
    assert (await start(running, allowed)).status_code == 202
    other = issue_token(SECRET, "svc", sagas=["another-saga"])
    assert (await start(running, other)).status_code == 403
    assert (await start(running, issue_token(SECRET, "svc", sagas=[]))).status_code == 403
    for payload in ([1, 2], "text", 7):
        assert (await start(running, signed(payload))).status_code == 401
    assert (await start(running, signed(claims(), header={"alg": "none"}))).status_code == 401
