"""Detection shared by live nodes on one real redis-server, over real TCP: a clone seen on
node A and on node B is one case, which either node serves; with Redis gone the answers
go on, the checks are counted as dropped, and detection resumes when it is back."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from s13eir.config_loading import config_from_mapping
from tests import mme as M
from tests.conftest import RunningNode, running_node
from tests.detection.test_node_detection import CLONED, PEERS, TEST_TAC, answers, http_get
from tests.lists.test_redis_node import redis_config, seed
from tests.services import RedisServer


def shared_config(server: RedisServer) -> Any:
    cfg = redis_config(server)
    cfg["peers"] = {"list": PEERS}
    cfg["detection"] = {"enabled": True}
    return config_from_mapping(cfg)


def ecr(host: str, imei: str, imsi: str) -> tuple[str, bytes]:
    return host, M.to_bytes(M.ecr(imei, imsi, origin_host=host))


async def cases_of(rn: RunningNode) -> dict[str, Any]:
    status, body = await http_get(rn, "/cases")
    assert status == 200, body
    return {c["imei"]: c for c in json.loads(body)["cases"]}


async def until(what: str, check: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.05)


def findings(metrics: str, rule: str) -> float:
    line = f's13eir_detection_findings_total{{rule="{rule}"}} '
    return sum(float(x[len(line) :]) for x in metrics.splitlines() if x.startswith(line))


async def test_a_clone_seen_on_two_nodes_is_one_case(redis_server: RedisServer) -> None:
    seed(redis_server)
    async with running_node(shared_config(redis_server)) as a, running_node(shared_config(redis_server)) as b:
        # The owner in Madrid on node A, the clone in Barcelona on node B at once.
        await answers(a, [ecr("mme1.s13eir.test", CLONED, "214010000000001")])
        await answers(b, [ecr("mme2.s13eir.test", CLONED, "214010000000002")])
        await answers(a, [ecr("mme1.s13eir.test", TEST_TAC, "214010000000003")])

        async def both_see_them() -> bool:
            return [set(await cases_of(a)), set(await cases_of(b))] == [{CLONED, TEST_TAC}] * 2

        await until("both nodes serve both cases", both_see_them)
        for n in (a, b):
            clone = (await cases_of(n))[CLONED]
            assert clone["rules"] == {"time_distance": 1} and clone["status"] == "open"
            # The two nodes' drains (every 100 ms each) decide which sighting the state saw first.
            assert sorted(clone["imsis"]) == ["214010000000001", "214010000000002"]
            assert sorted(e["peer"] for e in clone["evidence"]) == ["mme1.s13eir.test", "mme2.s13eir.test"]
            status, one = await http_get(n, f"/cases/{TEST_TAC}")
            assert status == 200 and json.loads(one)["rules"] == {"invalid_identifier": 1}
        # One finding in the cluster: made by whichever node wrote the second sighting.
        texts = [(await http_get(n, "/metrics"))[1].decode() for n in (a, b)]
        assert sum(findings(t, "time_distance") for t in texts) == 1
        assert sum(findings(t, "invalid_identifier") for t in texts) == 1
        # Seen again on both nodes: nothing new to report, no second finding.
        await answers(b, [ecr("mme2.s13eir.test", CLONED, "214010000000002")])
        await answers(a, [ecr("mme1.s13eir.test", CLONED, "214010000000001")])
        await asyncio.sleep(0.5)
        texts = [(await http_get(n, "/metrics"))[1].decode() for n in (a, b)]
        assert sum(findings(t, "time_distance") for t in texts) == 1


async def test_redis_gone_answers_go_on_and_detection_resumes(redis_server: RedisServer) -> None:
    seed(redis_server)
    async with running_node(shared_config(redis_server)) as rn:
        redis_server.kill()
        # The phone is on no list: the Bloom filter answers it without Redis, as without detection.
        await answers(rn, [ecr("mme1.s13eir.test", CLONED, "214010000000001"),
                           ecr("mme2.s13eir.test", CLONED, "214010000000002")])  # fmt: skip

        async def dropped() -> bool:
            metrics = (await http_get(rn, "/metrics"))[1].decode()
            return 's13eir_detection_dropped_total{reason="store"} 2.0' in metrics

        await until("the checks were counted as dropped", dropped)
        assert (await http_get(rn, "/cases"))[0] == 503
        assert "detection" not in rn.node.supervisor.describe_down()  # an outage, not a crash
        redis_server.start()
        seed(redis_server)

        async def resumed() -> bool:
            await answers(rn, [ecr("mme1.s13eir.test", CLONED, "214010000000003"),
                               ecr("mme2.s13eir.test", CLONED, "214010000000004")])  # fmt: skip
            status, body = await http_get(rn, "/cases")
            return status == 200 and CLONED in {c["imei"] for c in json.loads(body)["cases"]}

        await until("detection resumed once Redis was back", resumed, timeout=15)
        case = (await cases_of(rn))[CLONED]
        assert "214010000000003" in case["imsis"] and "214010000000001" not in case["imsis"]
