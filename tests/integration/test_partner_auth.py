"""Partners sign in as the FHIR ecosystem expects and join or leave while the stack runs (one
stack for the module): a structure onboarded with `parcours structures add` gets an access token
for a signed assertion and posts a referral its recipient sees; a replayed assertion is refused by
the shared jti ledger, also when sent to two instances at once; its key is rotated without a
failed request; once removed, its token gets 401 and its Kafka client is refused, while its case
stays with the recipient."""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from parcours.auth.client import assertion, new_key, public_jwk, token_form
from parcours.bus.errors import ClusterError
from parcours.bus.kafkaio import end_offsets
from tests.api import referral_body
from tests.stack import Stack, eventually, token

SLUG = f"cpts-31-t{uuid.uuid4().hex[:6]}"  # its own principal: the cluster is shared by the session's tests
#: what the module's story carries from one step to the next: the key in use, the case opened
STORY: dict[str, Any] = {}


async def _structures(stack: Stack, *args: str) -> str:
    """`parcours structures ...` as the operator runs it (the partner's traffic goes on meanwhile)."""
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "parcours.cli", "structures", *args, env=stack.env,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    return out.decode()


class Partner:
    """The onboarded structure's IT system: signs assertions, asks for tokens, calls the CPTS adapter."""

    def __init__(self, stack: Stack, client: httpx.AsyncClient, key: Any) -> None:
        self.stack, self.client, self.key = stack, client, key
        self.url = stack.url("cpts")

    async def ask(self, scope: str = "system/*.cruds", **claims: Any) -> httpx.Response:
        signed = assertion(SLUG, self.key, self.url + "/auth/token", **claims)
        return await self.client.post(self.url + "/auth/token", data=token_form(signed, scope))

    async def token(self, scope: str = "system/*.cruds") -> str:
        r = await self.ask(scope)
        assert r.status_code == 200, r.text
        return str(r.json()["access_token"])


@pytest.fixture(scope="module")
async def client(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    await stack.ready()
    async with httpx.AsyncClient(timeout=30) as c:
        yield c


@pytest.fixture(scope="module")
def keyfile(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path]:
    key = new_key("ES384", "k1")
    path = tmp_path_factory.mktemp("keys") / "k1.json"
    path.write_text(json.dumps({"keys": [public_jwk(key)]}))
    return key, path


async def test_a_structure_onboarded_while_running_posts_a_referral_its_recipient_sees(
        stack: Stack, client: httpx.AsyncClient, keyfile: tuple[Any, Path]) -> None:
    key, path = keyfile
    await _structures(stack, "add", SLUG, "--kind", "cpts", "--territory", "31", "--name", "CPTS de test", "--jwks", str(path))
    partner = Partner(stack, client, key)

    async def issued() -> str | None:
        r = await partner.ask()
        return str(r.json()["access_token"]) if r.status_code == 200 else None
    access = await eventually(issued, 30, "the adapter knows the new structure")
    auth = {"Authorization": f"Bearer {access}"}
    r = await client.post(partner.url + "/v1/referrals", json=referral_body("dac-31"), headers=auth)
    assert r.status_code == 202, r.text
    case_id = STORY["case"] = r.json()["case_id"]
    STORY["key"] = key

    async def seen() -> bool:
        got = await client.get(f"{stack.url('dac')}/v1/cases/{case_id}", headers=token("dac-31"))
        return got.status_code == 200
    await eventually(seen, 30, "the DAC sees the new structure's referral")

    replayed = assertion(SLUG, key, partner.url + "/auth/token", jti="once-only")
    first = await client.post(partner.url + "/auth/token", data=token_form(replayed, "system/*.rs"))
    again = await client.post(partner.url + "/auth/token", data=token_form(replayed, "system/*.rs"))
    assert first.status_code == 200, first.text
    assert (again.status_code, again.json()["error"]) == (401, "invalid_client")
    assert "jti" in again.json()["error_description"]


async def test_two_instances_behind_one_url_share_the_issuer_and_the_jti_ledger(
        stack: Stack, client: httpx.AsyncClient, keyfile: tuple[Any, Path]) -> None:
    """Two CPTS instances behind one public URL (a load balancer's): a token issued by one is
    honoured by the other, and one assertion sent to both at once is exchanged by one only."""
    key, _ = keyfile
    partner = Partner(stack, client, key)
    second = stack.url(stack.start_adapter("cpts", instance=1, env={"PARCOURS_PUBLIC_URL": partner.url}))
    try:
        async def ready() -> bool:
            return (await client.get(second + "/readyz")).status_code == 200
        await eventually(ready, 60, "the second CPTS instance ready")
        access = {"Authorization": f"Bearer {await partner.token('system/EpisodeOfCare.rs')}"}
        assert (await client.get(second + "/v1/cases", headers=access)).status_code == 200
        for _ in range(5):
            signed = assertion(SLUG, key, partner.url + "/auth/token")
            answers = await asyncio.gather(*(client.post(url + "/auth/token", data=token_form(signed, "system/*.rs"))
                                             for url in (partner.url, second)))
            assert sorted(r.status_code for r in answers) == [200, 401], [r.text for r in answers]
            refused = next(r for r in answers if r.status_code == 401)
            assert "jti" in refused.json()["error_description"]
    finally:
        stack.kill("adapter-cpts-1")


async def test_its_key_is_rotated_without_a_failed_request(stack: Stack, client: httpx.AsyncClient,
                                                          keyfile: tuple[Any, Path], tmp_path: Path) -> None:
    old, _ = keyfile
    new = new_key("RS384", "k2")
    (tmp_path / "k2.json").write_text(json.dumps(public_jwk(new)))
    partner, failures, done = Partner(stack, client, old), [], asyncio.Event()

    async def work() -> int:  # the partner's traffic: a token per request, from whichever key it holds now
        n = 0
        while not done.is_set():
            r = await partner.ask("system/EpisodeOfCare.rs")
            if r.status_code == 200:
                got = await client.get(partner.url + "/v1/cases", headers={"Authorization": f"Bearer {r.json()['access_token']}"})
                n += 1
                if got.status_code != 200:
                    failures.append(got.text)
            else:
                failures.append(r.text)
            await asyncio.sleep(0.05)
        return n

    traffic = asyncio.create_task(work())
    await _structures(stack, "update", SLUG, "--add-key", str(tmp_path / "k2.json"))
    trial = Partner(stack, client, new)

    async def new_key_works() -> bool:
        return (await trial.ask("system/EpisodeOfCare.rs")).status_code == 200
    await eventually(new_key_works, 30, "the new key accepted")
    partner.key = new  # the partner moves to its new key, then the operator removes the old one
    await _structures(stack, "update", SLUG, "--remove-key", "k1")

    async def old_key_refused() -> bool:
        return (await Partner(stack, client, old).ask("system/EpisodeOfCare.rs")).status_code == 401
    await eventually(old_key_refused, 30, "the old key refused")
    done.set()
    assert await traffic > 0
    assert failures == []
    STORY["key"] = new


async def test_a_removed_structure_gets_401_and_its_kafka_client_is_refused(stack: Stack, client: httpx.AsyncClient) -> None:
    partner = Partner(stack, client, STORY["key"])
    access = {"Authorization": f"Bearer {await partner.token('system/*.rs')}"}
    as_partner = stack.cluster.access(SLUG)  # its SCRAM secret, from the development credential store
    views = f"{stack.prefix}.views.{SLUG}"
    assert sum((await end_offsets(as_partner, [views])).values()) > 0  # it reads its own view while registered
    assert (await client.get(partner.url + "/v1/cases", headers=access)).status_code == 200
    await _structures(stack, "remove", SLUG)

    async def refused() -> bool:
        return (await client.get(partner.url + "/v1/cases", headers=access)).status_code == 401
    await eventually(refused, 10, "the unexpired token of a removed structure refused")
    assert (await partner.ask()).status_code == 401
    with pytest.raises(ClusterError):
        await end_offsets(as_partner, [views])
    r = await client.get(f"{stack.url('dac')}/v1/cases/{STORY['case']}", headers=token("dac-31"))
    assert r.status_code == 200  # its cases stay
    assert SLUG in await _structures(stack, "list")  # listed as left


