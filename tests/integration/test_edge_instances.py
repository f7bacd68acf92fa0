"""Several adapter instances of one kind, each with its read model on disk: identical answers,
a restart that resumes at its stored positions, webhook deliveries split between the
instances, each notification delivered once, also after one instance is SIGKILLed."""

from __future__ import annotations

import json
import signal
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from parcours.topology.catalogue import Catalogue
from tests.api import Api, referral_body
from tests.stack import HookServer, Stack, eventually, token


@pytest.fixture
async def api(stack: Stack) -> AsyncIterator[Api]:
    await stack.ready()
    async with httpx.AsyncClient(timeout=30) as client:
        yield Api(stack, client)


class _Hooks:
    """A local endpoint recording every delivery by path (`/hook/<slug>`)."""

    def __init__(self) -> None:
        self.received: list[tuple[str, dict[str, Any]]] = []
        self.server = HookServer(self._answer)
        self.url = self.server.url

    def _answer(self, path: str, headers: Any, body: bytes) -> int:
        self.received.append((path.rsplit("/", 1)[-1], json.loads(body)))
        return 204

    def ids(self, slug: str) -> list[str]:
        return [n["notification_id"] for s, n in self.received if s == slug]


async def _ready(client: httpx.AsyncClient, url: str) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        r = await client.get(url + "/readyz")
        return r.json() if r.status_code == 200 else None
    return await eventually(probe, 60, f"{url} ready")


async def test_two_instances_serve_the_same_answers_and_a_restart_resumes(api: Api) -> None:
    stack, client = api.stack, api.client
    cases = [(await api.open_case("cpts-31-nord", "dac-31"))[0] for _ in range(5)]
    last = [(await api.post("dac-31", f"/v1/cases/{c}/messages", {"body": "Vu."})).json()["message_id"] for c in cases]
    second = stack.url(stack.start_adapter("dac", instance=1))  # its first start reads all of that
    try:
        first_start = (await _ready(client, second))["read_model"]
        for c, m in zip(cases, last, strict=True):
            view = await api.view_with("dac-31", c, f"message:{m}")

            async def same(c: str = c, view: dict[str, Any] = view) -> bool:
                got: dict[str, Any] = (await client.get(f"{second}/v1/cases/{c}", headers=token("dac-31"))).json()
                return got == view
            await eventually(same, 30, f"the second instance's view of {c}")
        for path in ("/v1/cases", "/v1/inbox?limit=1000"):
            a = (await client.get(stack.url("dac") + path, headers=token("dac-31"))).json()
            b = (await client.get(second + path, headers=token("dac-31"))).json()
            assert a == b, path

        # a restart resumes at the positions stored with the data: it reads what it missed, not all
        stack.kill("adapter-dac-1", signal.SIGKILL)
        missed = (await api.open_case("cpts-31-nord", "dac-31"))[0]
        stack.spawn("adapter-dac-1", "adapter", "dac", "--port", str(stack.ports["dac-1"]), "--instance", "1")
        restart = (await _ready(client, second))["read_model"]
        assert not first_start["resumed"]
        assert restart["resumed"]
        assert restart["offsets_read_at_start"] < first_start["offsets_read_at_start"]

        async def has_missed() -> bool:
            return (await client.get(f"{second}/v1/cases/{missed}", headers=token("dac-31"))).status_code == 200
        await eventually(has_missed, 30, "the case written while the instance was down")
        a = (await client.get(stack.url("dac") + "/v1/cases", headers=token("dac-31"))).json()
        assert a == (await client.get(second + "/v1/cases", headers=token("dac-31"))).json()
    finally:
        stack.kill("adapter-dac-1")


async def _delivering(client: httpx.AsyncClient, url: str) -> set[str]:
    text = (await client.get(url + "/metrics")).text
    return {line.split('structure="')[1].split('"')[0] for line in text.splitlines()
            if line.startswith("parcours_webhook_delivering{") and line.endswith(" 1.0")}


async def _cursor_at(api: Api, slug: str, sequence: int) -> bool:
    """Whether the webhook group's committed cursor of `slug` has reached `sequence`."""
    cat = Catalogue.load(prefix=api.stack.prefix)
    tp = TopicPartition(cat.per_structure("inbox", slug).name, 0)
    admin = AIOKafkaAdminClient(**api.stack.kafka.aiokafka())
    await admin.start()
    try:
        committed = await admin.list_consumer_group_offsets(cat.group_id("adapter", "-webhooks", "cpts"), partitions=[tp])
    finally:
        await admin.close()
    return tp in committed and committed[tp].offset >= sequence


class _Notifier:
    """Each CPTS refers people to the DAC; the DAC acknowledges: notifications to each CPTS."""

    def __init__(self, api: Api, slugs: list[str], start: dict[str, int], hooks: _Hooks) -> None:
        self.api, self.slugs, self.start, self.hooks = api, slugs, start, hooks

    async def notify(self, rounds: int, url: str) -> None:
        for _ in range(rounds):
            for s in self.slugs:
                r = await self.api.client.post(url + "/v1/referrals", json=referral_body("dac-31"), headers=token(s))
                assert r.status_code == 202, r.text
                ref = r.json()
                # the DAC acts once its view holds the referral (the adapter's own wait is 3 s only)
                await self.api.view_with("dac-31", ref["case_id"], f"referral:{ref['referral_id']}", timeout=60)
                await self.api.post("dac-31", f"/v1/referrals/{ref['referral_id']}/status", {"status": "acknowledged"})

    async def since_registration(self, url: str, slug: str) -> list[dict[str, Any]]:
        """`slug`'s inbox notifications since its webhook registration."""
        feed = (await self.api.client.get(f"{url}/v1/inbox?after={self.start[slug]}&limit=1000", headers=token(slug))).json()
        notes: list[dict[str, Any]] = feed["notifications"]
        return notes

    async def last_sequence(self, url: str, slug: str) -> int:
        return max(int(n["sequence"]) for n in await self.since_registration(url, slug))

    async def all_delivered(self, url: str) -> dict[str, list[str]] | None:
        """The inbox notifications since the registration, once the endpoint has each of them."""
        expected = {s: [n["notification_id"] for n in await self.since_registration(url, s)] for s in self.slugs}
        return expected if all(sorted(set(self.hooks.ids(s))) == sorted(expected[s]) for s in self.slugs) else None


async def test_webhooks_are_split_between_instances_and_delivered_once_through_a_kill(api: Api) -> None:
    stack, client = api.stack, api.client
    slugs = ["cpts-31-nord", "cpts-31-sud"]
    urls = {"cpts": stack.url("cpts"), "cpts-1": stack.url(stack.start_adapter("cpts", instance=1))}
    hooks = _Hooks()
    try:
        await _ready(client, urls["cpts-1"])
        start = {}
        for s in slugs:
            reg = await client.put(urls["cpts"] + "/v1/webhook", json={"url": f"{hooks.url}/{s}"}, headers=token(s))
            assert reg.status_code == 200, reg.text
            start[s] = reg.json()["from_sequence"]

        async def split() -> dict[str, set[str]] | None:
            owners = {name: await _delivering(client, url) for name, url in urls.items()}
            return owners if all(len(o) == 1 for o in owners.values()) else None
        owners = await eventually(split, 60, "one structure's deliveries on each instance")
        n = _Notifier(api, slugs, start, hooks)
        await n.notify(3, urls["cpts"])
        expected = await eventually(lambda: n.all_delivered(urls["cpts"]), 60, "every notification delivered")
        assert all(expected[s] for s in slugs)

        # the instance delivering the northern CPTS dies; the survivor takes its structure over. The
        # kill waits for the cursor's commit, which follows each 2xx by milliseconds: a kill inside
        # that window makes the next owner deliver the notification again (at least once, by design)
        last = await n.last_sequence(urls["cpts"], "cpts-31-nord")
        await eventually(lambda: _cursor_at(api, "cpts-31-nord", last), 30, "the northern CPTS's cursor committed")
        victim = next(name for name, o in owners.items() if "cpts-31-nord" in o)
        survivor = next(name for name in urls if name != victim)
        stack.kill(f"adapter-{victim}", signal.SIGKILL)
        await n.notify(2, urls[survivor])

        async def taken_over() -> bool:
            return set(slugs) <= await _delivering(client, urls[survivor])
        await eventually(taken_over, 60, "the survivor delivering both structures")
        expected = await eventually(lambda: n.all_delivered(urls[survivor]), 60, "every notification delivered after the kill")
        for s in slugs:
            counts = Counter(hooks.ids(s))
            assert sorted(counts) == sorted(expected[s])
            assert max(counts.values()) == 1, f"{s}: delivered twice: {[k for k, c in counts.items() if c > 1]}"
    finally:
        hooks.server.close()
        await _back_to_one_cpts(api)


async def _back_to_one_cpts(api: Api) -> None:
    """The module's other tests expect one CPTS adapter, named after its kind."""
    if "adapter-cpts-1" in api.stack.procs:
        api.stack.kill("adapter-cpts-1")
    if "adapter-cpts" not in api.stack.procs:
        api.stack.start_adapter("cpts")
        await _ready(api.client, api.stack.url("cpts"))
