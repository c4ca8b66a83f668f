"""What a configuration reload (SIGHUP) may change live, and what needs a restart. Pure.

Live: ``peers``, ``policy``, ``logging.level``, ``logging.log_whitelisted``,
``logging.mask_imsi``, ``store.lists`` and ``sync.guards``. Everything else keeps its
running value and is named, so that the operator knows a restart is due.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec

from .config import Config

_LIVE_SECTIONS = ("peers", "policy", "logging", "store", "sync")


@dataclass(frozen=True, slots=True)
class ReloadPlan:
    config: Config  # the running configuration with the live changes applied
    applied: tuple[str, ...]  # of peers, policy, logging: the sections that changed
    restart_needed: tuple[str, ...]  # what changed but only takes effect after a restart


def plan_reload(old: Config, new: Config) -> ReloadPlan:
    replace = msgspec.structs.replace
    logs = replace(old.logging, level=new.logging.level, log_whitelisted=new.logging.log_whitelisted,
                   mask_imsi=new.logging.mask_imsi)  # fmt: skip
    restart = [name for name in old.__struct_fields__
               if name not in _LIVE_SECTIONS and getattr(old, name) != getattr(new, name)]  # fmt: skip
    if logs != new.logging:
        # The renderer is bound into every logger at start: a new format needs a restart.
        restart.append("logging.format")
    if replace(old.store, lists=new.store.lists) != new.store:
        restart.append("store (other than store.lists)")
    if replace(old.sync, guards=new.sync.guards) != new.sync:
        restart.append("sync (other than sync.guards)")
    config = replace(
        old, peers=new.peers, policy=new.policy, logging=logs,
        store=replace(old.store, lists=new.store.lists), sync=replace(old.sync, guards=new.sync.guards),
    )  # fmt: skip
    applied = tuple(name for name in ("peers", "policy", "logging") if getattr(old, name) != getattr(config, name))
    return ReloadPlan(config, applied, tuple(restart))
