"""policy.store_unavailable: what each mode answers for a Bloom positive the store
cannot confirm (decision.policy), as a property and on a node whose Redis died."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from s13eir.config_loading import config_from_mapping
from s13eir.decision.model import EquipmentStatus, ListKind, UnknownPolicy
from s13eir.decision.policy import StoreUnavailablePolicy, outage_verdict
from s13eir.lists.snapshot import ListSnapshot, SnapshotBuilder
from tests.conftest import running_node
from tests.lists.test_redis_node import BLACK, GREY, UNLISTED, redis_config, seed, verdicts
from tests.services import RedisServer

IMEI = "35209900176148"
IMSI = "001010000000001"


def snapshot(lines: list[str]) -> ListSnapshot:
    b = SnapshotBuilder()
    for line in lines:
        kind, value = line.split(":", 1)
        if kind == "exception":
            b.add_exception(IMEI, IMSI, "test")
        else:
            b.add_imei(value, ListKind(kind), "test", "")
    return b.build()


last_knowns = st.one_of(
    st.none(),
    st.sampled_from([[], ["black:" + IMEI], ["grey:" + IMEI], ["white:" + IMEI], ["black:" + IMEI, "exception:"]]),
)


@given(
    mode=st.sampled_from(list(StoreUnavailablePolicy)),
    last=last_knowns,
    positives=st.frozensets(st.sampled_from(["black", "grey", "white", "exceptions"]), min_size=1),
    imsi=st.sampled_from([None, IMSI]),
    unknown=st.sampled_from(list(UnknownPolicy)),
)
def test_never_whitelisted_for_a_black_or_grey_positive(
    mode: StoreUnavailablePolicy, last: list[str] | None, positives: frozenset[str], imsi: str | None,
    unknown: UnknownPolicy,
) -> None:  # fmt: skip
    last_known = None if last is None else snapshot(last).facts(IMEI, imsi)
    out = outage_verdict(mode, last_known, positives, imsi, unknown, IMEI)
    if mode in (StoreUnavailablePolicy.TOO_BUSY, StoreUnavailablePolicy.UNABLE_TO_COMPLY):
        assert out is None
        return
    assert out is not None
    verdict, _detail = out
    if positives & {"black", "grey"}:
        assert verdict.status is not EquipmentStatus.WHITELISTED
    if mode is StoreUnavailablePolicy.GREYLISTED:
        assert verdict.status is EquipmentStatus.GREYLISTED
    if last_known is None:
        expect = (
            EquipmentStatus.BLACKLISTED
            if mode is StoreUnavailablePolicy.BLOOM and "black" in positives
            else EquipmentStatus.GREYLISTED
        )
        assert verdict.status is expect
        assert verdict.reason.source == "policy.store_unavailable" and verdict.reason.entry == mode.value


def test_last_known_blacklisted_stays_blacklisted() -> None:
    last = snapshot(["black:" + IMEI]).facts(IMEI, None)
    for mode in (StoreUnavailablePolicy.LAST_KNOWN, StoreUnavailablePolicy.BLOOM):
        out = outage_verdict(mode, last, frozenset({"black"}), None, UnknownPolicy.WHITELISTED, IMEI)
        assert out is not None and out[0].status is EquipmentStatus.BLACKLISTED


async def test_bloom_policy_on_a_node_whose_redis_died(redis_server: RedisServer) -> None:
    seed(redis_server)
    async with running_node(config_from_mapping(redis_config(redis_server, store_unavailable="bloom"))) as rn:
        store = rn.node.redis_lists
        assert store is not None
        # A false positive confirmed (cached WHITELISTED) before the outage: force one by
        # adding an unlisted IMEI to this node's blacklist filter.
        store._lists["black"].bloom.add(int(UNLISTED))  # type: ignore[union-attr]
        assert await verdicts(rn, [(UNLISTED, None)]) == ["WHITELISTED"]
        redis_server.kill()
        got = await verdicts(rn, [(UNLISTED, None), ("35209900176155", None), (GREY, None), (BLACK, IMSI)])
        # Never-confirmed black positive: BLACKLISTED; the cached false positive: GREYLISTED,
        # not WHITELISTED; grey: GREYLISTED; the exception pair, never confirmed: BLACKLISTED.
        assert got == ["GREYLISTED", "BLACKLISTED", "GREYLISTED", "BLACKLISTED"]
