"""N5g-eir's ``check`` on a node whose lists are in Redis: the lists and the policy S13
uses, awaited when Redis must confirm a Bloom positive, and ``policy.store_unavailable``
when it cannot (a refusal, too_busy or unable_to_comply, is 500 SYSTEM_FAILURE: the AMF
applies its own policy). A node with embedded lists uses ``n5g_eir.lists_check``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from s13eir.decision.model import Facts, Verdict
from s13eir.decision.policy import Policy, Refusal
from s13eir.lists.store_state import StoreUnavailable
from s13eir.s13.application import Lists
from s13eir.sbi.n5g_eir import Check

if TYPE_CHECKING:
    from s13eir.lists.redis_store import RedisLists

__all__ = ["store_check"]


def store_check(lists: Callable[[], Lists], policy: Callable[[], Policy], remote: RedisLists) -> Check:
    """``lists`` and ``policy`` are called per request: a reload swaps them."""

    async def confirmed(imei14: str, imsi: str | None) -> Verdict | None:
        p = policy()
        try:
            return p.verdict(await remote.fetch(imei14, imsi), imsi, imei14)
        except StoreUnavailable as e:
            outcome = p.unconfirmed(e.last_known, e.positives, imsi, imei14)
            return None if isinstance(outcome, Refusal) else outcome[0]

    def check(imei14: str, imsi: str | None, sv: str | None = None) -> Verdict | Awaitable[Verdict | None]:
        facts = lists().facts(imei14, imsi)
        if isinstance(facts, Facts):
            return policy().verdict(facts, imsi, imei14)
        return confirmed(imei14, imsi)

    return check
