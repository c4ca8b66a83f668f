"""config_reload.plan_reload, without a node: what a SIGHUP applies and what it names."""

from __future__ import annotations

from typing import Any

import pytest

from s13eir.config_loading import config_from_mapping
from s13eir.config_reload import plan_reload
from tests.conftest import node_config

BASE = node_config()


def plan(**changes: Any) -> tuple[tuple[str, ...], tuple[str, ...]]:
    old = config_from_mapping(BASE)
    new = config_from_mapping({**BASE, **changes})
    p = plan_reload(old, new)
    return p.applied, p.restart_needed


@pytest.mark.parametrize(
    ("changes", "applied", "restart"),
    [
        ({}, (), ()),
        ({"policy": {"unknown_imei": "greylisted"}}, ("policy",), ()),
        ({"peers": {**BASE["peers"], "allow_unknown": True}}, ("peers",), ()),
        ({"logging": {"level": "debug"}}, ("logging",), ()),
        ({"logging": {"log_whitelisted": True, "mask_imsi": True}}, ("logging",), ()),
        ({"logging": {**BASE.get("logging", {}), "format": "console"}}, (), ("logging.format",)),
        ({"diameter": {"cer_timeout_s": 3}}, (), ("diameter",)),
        ({"node": {**BASE["node"], "product_name": "other"}}, (), ("node",)),
        ({"store": {**BASE["store"], "bloom_fp_rate": 0.01}}, (), ("store (other than store.lists)",)),
        ({"store": {**BASE["store"], "lists": []}}, (), ()),  # applied by the list reload, not named
        ({"sync": {"guards": {"max_removals": 5}}}, (), ()),
    ],
    ids=["nothing", "policy", "peers", "level", "log-flags", "format", "diameter", "node", "store", "store.lists",
         "sync.guards"],
)  # fmt: skip
def test_what_a_reload_applies_and_what_it_names(
    changes: dict[str, Any], applied: tuple[str, ...], restart: tuple[str, ...]
) -> None:
    assert plan(**changes) == (applied, restart)


def test_the_planned_config_keeps_what_needs_a_restart_and_takes_the_rest() -> None:
    old = config_from_mapping(BASE)
    new = config_from_mapping({**BASE, "diameter": {"cer_timeout_s": 3}, "policy": {"unknown_imei": "greylisted"},
                               "logging": {"level": "debug", "format": "console"}})  # fmt: skip
    p = plan_reload(old, new)
    assert p.config.diameter == old.diameter and p.config.policy == new.policy
    assert p.config.logging.level == "debug" and p.config.logging.format == old.logging.format
    assert set(p.restart_needed) == {"diameter", "logging.format"}
