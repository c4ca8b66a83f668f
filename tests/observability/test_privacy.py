"""One masking setting (logging.mask_imsi) covers every subscriber identifier in every
log line and sighting event: IMSIs over S13, SUPIs and GPSIs over N5g-eir, and the IMSI
of an exception-pair entry. A full run is scanned for any of them in clear."""

from __future__ import annotations

import asyncio
import json

import aiomqtt
import structlog

from s13eir.client import S13Client
from s13eir.config_loading import config_from_mapping
from s13eir.decision.masking import mask_entry, mask_gpsi, mask_supi
from tests.conftest import MME_HOST, MME_REALM, node_config, running_node
from tests.sbi_helpers import h2_client
from tests.services import MosquittoBroker

PAIR_IMSI = "001010000000001"  # config/lists/exceptions.csv pairs it with 35209900176148
IMSIS = [PAIR_IMSI, "001010123456789", "310150987654321"]
MSISDN = "15551234567"


def test_maskers() -> None:
    assert mask_supi("imsi-001010123456789") == "imsi-00101********89"
    assert mask_supi("nai-someone@example.org") == "nai-" + "*" * len("someone@example.org")
    assert mask_gpsi("msisdn-15551234567") == "msisdn-155******67"
    assert mask_gpsi("extid-user42@operator.example") == "extid-******@operator.example"
    assert mask_entry("exception", "35209900176148/001010000000001") == "35209900176148/00101********01"
    assert mask_entry("imei", "35209900176148") == "35209900176148"


async def test_a_full_run_with_masking_shows_no_identifier_in_clear(mqtt_broker: MosquittoBroker) -> None:
    cfg = node_config(
        logging={"level": "info", "format": "json", "log_whitelisted": True, "mask_imsi": True},
        events={"url": mqtt_broker.url, "topic_prefix": "eir/sightings"},  # its own flag left off
    )
    cfg["sbi"] = {"address": "127.0.0.1", "port": 0}
    events: list[str] = []
    with structlog.testing.capture_logs() as logs:
        async with aiomqtt.Client("127.0.0.1", mqtt_broker.port, identifier="fraud-desk") as sub:
            await sub.subscribe("eir/sightings/#", qos=1)
            async with running_node(config_from_mapping(cfg)) as rn:
                c = S13Client(MME_HOST, MME_REALM)
                await c.connect(rn.host, rn.port)
                try:
                    assert (await c.check("35209900176148", PAIR_IMSI)).verdict == "WHITELISTED"  # exception pair
                    assert (await c.check("35209900176148", IMSIS[1])).verdict == "BLACKLISTED"
                    assert (await c.check("35290611000001", IMSIS[2])).verdict == "GREYLISTED"
                finally:
                    await c.disconnect()
                port = next(p for t, _, p in rn.node.bound if t == "sbi")
                async with h2_client(f"http://127.0.0.1:{port}") as http:
                    for imei, imsi in (("35209900176148", IMSIS[1]), ("35290611000001", IMSIS[2])):
                        params = {"pei": f"imei-{imei}0", "supi": f"imsi-{imsi}", "gpsi": f"msisdn-{MSISDN}"}
                        r = await http.get("/n5g-eir-eic/v1/equipment-status", params=params)
                        assert r.status_code == 200

                async def collect() -> None:
                    async for msg in sub.messages:
                        events.append(bytes(msg.payload).decode())  # type: ignore[arg-type]
                        if len(events) == 4:  # S13 black + grey, N5g-eir black + grey
                            return

                await asyncio.wait_for(collect(), 10)
    text = "\n".join([*events, *(json.dumps(e, default=str) for e in logs)])
    assert any(e.get("event") == "verdict" and e.get("rule") == "exception" for e in logs)
    assert any(e.get("gpsi") for e in logs)
    for secret in [*IMSIS, MSISDN]:
        assert secret not in text, [line for line in text.splitlines() if secret in line][:3]
