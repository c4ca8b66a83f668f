"""decision/policy.py: the one module that says what the operator's policy answers, and
what S13 and N5g-eir each put on their wire for it (the full comparison over generated
phones and lists is tests/sbi/test_equivalence.py)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from s13eir.decision.engine import decide, policy_verdict
from s13eir.decision.model import EquipmentStatus, Facts, Rule, UnknownPolicy
from s13eir.decision.policy import (
    ImeisvInImeiPolicy,
    MalformedImeiPolicy,
    Policy,
    Refusal,
    StoreUnavailablePolicy,
    outage_verdict,
)

POLICIES = st.builds(
    Policy,
    st.sampled_from(list(UnknownPolicy)),
    st.sampled_from(list(MalformedImeiPolicy)),
    st.sampled_from(list(ImeisvInImeiPolicy)),
    st.sampled_from(list(StoreUnavailablePolicy)),
)
POSITIVES = st.frozensets(st.sampled_from(["black", "grey", "white", "exceptions"]))


@given(POLICIES, st.text("0123456789x", max_size=20))
def test_a_malformed_imei_is_refused_exactly_under_reject(policy: Policy, imei: str) -> None:
    out = policy.malformed(imei)
    if policy.malformed_imei is MalformedImeiPolicy.REJECT:
        assert out is Refusal.MALFORMED
    else:
        assert not isinstance(out, Refusal)
        assert out.status is EquipmentStatus[policy.malformed_imei.name] and out.reason.rule is Rule.MALFORMED
        assert out.reason.entry == imei and out.reason.source == "policy.malformed_imei"


@given(POLICIES, st.booleans(), POSITIVES, st.sampled_from([None, "001010123456789"]))
def test_an_unconfirmed_positive_follows_store_unavailable(
    policy: Policy, known: bool, positives: frozenset[str], imsi: str | None
) -> None:
    last = Facts() if known else None
    out = policy.unconfirmed(last, positives, imsi, "35693803564380")
    mode = policy.store_unavailable
    if mode is StoreUnavailablePolicy.TOO_BUSY:
        assert out is Refusal.TOO_BUSY
    elif mode is StoreUnavailablePolicy.UNABLE_TO_COMPLY:
        assert out is Refusal.UNABLE_TO_COMPLY
    else:
        assert out == outage_verdict(mode, last, positives, imsi, policy.unknown_imei, "35693803564380")


@given(POLICIES)
def test_the_unlisted_verdict_and_the_lists_verdict_are_the_engines(policy: Policy) -> None:
    assert policy.unlisted() == policy_verdict(policy.unknown_imei)
    assert policy.verdict(Facts(), None, "35693803564380") == decide(
        Facts(), None, policy.unknown_imei, "35693803564380"
    )


@given(POLICIES, st.text("0123456789", min_size=16, max_size=16))
def test_an_imeisv_in_the_imei_avp_is_split_only_under_split(policy: Policy, digits: str) -> None:
    split = policy.split_imeisv(digits)
    assert split == ((digits[:14], digits[14:]) if policy.imeisv_in_imei is ImeisvInImeiPolicy.SPLIT else None)
