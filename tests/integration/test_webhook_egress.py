"""Webhooks reach public addresses only unless ``[server] webhook_allow`` lists them: checked
when a rule is applied (400 naming the rule and the field) and at each delivery after the
name is resolved, the request going to the address that was checked (DNS rebinding); the
server's own API stays refused; non-admins see a webhook's host, not its URL."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from bridgehead.config import ServerSettings
from bridgehead.domain.clusters import Role
from bridgehead.domain.egress import Egress
from bridgehead.rules import Delivery
from bridgehead.rules.webhook import PUBLIC_ONLY
from bridgehead.server.app import create_app
from bridgehead.store import create_store
from tests.integration.test_api import bearer
from tests.integration.test_webhook import Behaviour, hook, receiver, send  # noqa: F401

PUBLIC = "https://93.184.216.34/hooks/t0ken?key=v"
"""A public address (never contacted: these rules match nothing)."""

def rule(name: str, url: str, **webhook: Any) -> dict[str, Any]:
    return {"name": name, "match": {"type": "never.sent"},
            "actions": [{"webhook": {"url": url, **webhook}}]}


@pytest.fixture
async def server(tmp_path: Any) -> AsyncIterator[Callable[..., Any]]:
    """``await server(webhook_allow=[...])``: (http client, admin headers, client headers)
    of an app with those settings on a fresh SQLite store."""
    opened: list[Any] = []

    async def start(**settings: Any) -> tuple[httpx.AsyncClient, dict[str, str],
                                              dict[str, str]]:
        dsn = f"sqlite:///{tmp_path / f'bh{len(opened)}.db'}"
        store = create_store(dsn)
        await store.open()
        app = create_app(ServerSettings.load(store=dsn, **settings), store)
        _, admin = await store.create_token(name="admin", role=Role.ADMIN, cluster=None,
                                            tenant=None)
        _, client = await store.create_token(name="c", role=Role.CLIENT, cluster=None,
                                             tenant="tenA")
        http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bh")
        opened.append((http, store))
        return http, bearer(admin), bearer(client)

    yield start
    for http, store in opened:
        await http.aclose()
        await store.close()


@pytest.mark.parametrize(("url", "kind"), [
    ("http://127.0.0.1:9/h", "loopback"),
    ("http://169.254.169.254/latest/meta-data/", "link-local"),
    ("http://10.1.2.3/h", "private"),
    ("http://192.168.0.7:8080/h", "private"),
    ("http://100.64.0.1/h", "non-public"),
    ("http://[::1]:9/h", "loopback"),
    ("http://[::ffff:169.254.169.254]/h", "link-local"),
    ("http://0.0.0.0:9/h", "unspecified"),
    ("http://localhost:9/h", "loopback"),
])
async def test_inner_addresses_are_refused_when_a_rule_is_applied(
        server: Callable[..., Any], url: str, kind: str) -> None:
    http, admin, _ = await server()
    r = await http.put("/v1/rules", headers=admin,
                       json={"rules": [rule("ok", PUBLIC), rule("inner", url)]})
    assert r.status_code == 400, r.text
    detail = r.json()["detail"]
    assert detail.startswith("rules[1].actions[0].webhook.url: rule 'inner': "), detail
    assert f"is a {kind} address" in detail and "webhook_allow" in detail
    assert (await http.get("/v1/rules", headers=admin)).json() == []  # all or none


async def test_the_allow_list_opens_exceptions_but_not_the_servers_own_api(
        server: Callable[..., Any]) -> None:
    http, admin, _ = await server(webhook_allow=["127.0.0.1:9000", "10.0.0.0/8", "localhost"],
                                  host="127.0.0.1", port=8765)
    allowed = [rule("port", "http://127.0.0.1:9000/h"), rule("net", "http://10.9.8.7/h"),
               rule("name", "http://localhost:9/h")]
    r = await http.put("/v1/rules", headers=admin, json={"rules": allowed})
    assert r.status_code == 200, r.text
    for url in ("http://127.0.0.1:9001/h", "http://192.168.1.1/h"):
        r = await http.put("/v1/rules", headers=admin, json={"rules": [rule("no", url)]})
        assert r.status_code == 400 and "rule 'no'" in r.json()["detail"], r.text
    http, admin, _ = await server(webhook_allow=["127.0.0.0/8"], host="127.0.0.1", port=8765)
    own = await http.put("/v1/rules", headers=admin,
                         json={"rules": [rule("own", "http://127.0.0.1:8765/v1/jobs")]})
    assert own.status_code == 400
    assert own.json()["detail"].endswith("127.0.0.1:8765 is this server's own API"), own.text


async def test_a_bad_allow_list_entry_is_a_config_error() -> None:
    from bridgehead.errors import ConfigError

    with pytest.raises(ConfigError, match=r"webhook_allow.*'10\.0\.0\.0/33x'"):
        ServerSettings.load(store="sqlite:///:memory:", webhook_allow=["10.0.0.0/33x"])


async def test_non_admins_see_a_webhooks_host_not_its_url(server: Callable[..., Any]) -> None:
    http, admin, client = await server()
    stored = rule("hook", PUBLIC, secret="s", headers={"X-Team": "hpc", "Authorization": "t"})
    assert (await http.put("/v1/rules", headers=admin, json={"rules": [stored]})).is_success
    [seen] = (await http.get("/v1/rules", headers=client)).json()
    shown = seen["actions"][0]["webhook"]
    assert shown["url"] == "https://93.184.216.34" and "t0ken" not in str(seen)
    assert shown["headers"] == {"X-Team": "***", "Authorization": "***"}
    assert shown["secret"] == "***"
    [full] = (await http.get("/v1/rules", headers=admin)).json()
    assert full["actions"][0]["webhook"]["url"] == PUBLIC
    assert full["actions"][0]["webhook"]["headers"]["X-Team"] == "hpc"


async def test_a_name_that_resolves_to_loopback_is_refused_at_delivery(
        receiver: tuple[str, Behaviour]) -> None:  # noqa: F811
    url, behaviour = receiver
    async with httpx.AsyncClient() as client:
        delivery = await send(hook(url.replace("127.0.0.1", "localhost")), client,
                              egress=PUBLIC_ONLY)
    assert not delivery.ok and delivery.attempts == 1 and delivery.status is None
    assert delivery.error is not None and delivery.error.startswith("refused: localhost ")
    assert "loopback address" in delivery.error
    assert behaviour.received == []


async def test_each_attempt_connects_to_the_address_it_checked(
        receiver: tuple[str, Behaviour],  # noqa: F811
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A rebinding name: loopback (allowed) when first asked, then a private address. The
    first attempt goes to the checked 127.0.0.1 whatever the name says later; the retry sees
    the private address and is refused. (DNS is faked: no rebinding server runs here.)"""
    url, behaviour = receiver
    behaviour.statuses = [503]
    answers = ["127.0.0.1", "10.255.255.1", "10.255.255.1", "10.255.255.1"]
    real = socket.getaddrinfo

    def rebinding(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host != "rebind.test":
            return real(host, port, *args, **kwargs)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (answers.pop(0), port))]

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    port = url.split(":")[2].split("/")[0]
    async with httpx.AsyncClient() as client:
        delivery = await send(hook(url.replace("127.0.0.1", "rebind.test")), client,
                              egress=Egress.of(["127.0.0.1"]))
    assert [r.headers["Host"] for r in behaviour.received] == [f"rebind.test:{port}"]
    assert delivery == Delivery(ok=False, attempts=2, status=None, error=(
        "refused: rebind.test resolves to 10.255.255.1, which is a private address: webhooks "
        "may reach public addresses only, unless [server] webhook_allow lists it"))
