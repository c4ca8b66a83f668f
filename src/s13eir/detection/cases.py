"""Cases: the findings on one IMEI, gathered. Pure.

A finding opens the case of its IMEI or updates it: the rules that tripped (with how
often), the strongest action among them, first and last finding, every IMSI involved and
the observations that tripped the rules (the first ``MAX_EVIDENCE``). An analyst closes a
case (who, when, why); a later finding on the IMEI opens it again, counted, so that a
clone closed as a false alarm that trips again is seen again.

A case is a value with a JSON form (``as_dict``/``from_dict``): nodes that share
detection keep it in Redis and change it by compare-and-set.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..decision.masking import mask_imsi
from .detector import Finding
from .observation import Observation, Rat, TacInfo
from .rules import Action

MAX_EVIDENCE = 20
_STRENGTH = {Action.OBSERVE: 0, Action.NOTIFY: 1, Action.GREYLIST: 2, Action.BLOCK: 3}


@dataclass
class Case:
    imei14: str
    first: float
    last: float
    action: Action
    rules: dict[str, int] = field(default_factory=dict)
    imsis: dict[str, None] = field(default_factory=dict)  # in order of appearance
    evidence: list[Observation] = field(default_factory=list)
    details: list[str] = field(default_factory=list)
    model: str | None = None  # from the TAC database, when there is one
    device_type: str | None = None
    status: str = "open"  # or "closed"
    closed: dict[str, Any] | None = None  # the last close: at, by, note
    reopened: int = 0  # findings that opened it again after a close
    # The list changes asked of the writer for this IMEI (see plan_actions), each with
    # its state: requested, then applied or present (found there already), then undone.
    actions: list[dict[str, Any]] = field(default_factory=list)
    suppressed: bool = False  # undone by an analyst: later findings change no list

    def close(self, at: float, by: str, note: str) -> None:
        self.status = "closed"
        self.closed = {"at": at, "by": by, "note": note}

    def as_dict(self) -> dict[str, Any]:
        return {
            "imei": self.imei14,
            "status": self.status,
            "model": self.model,
            "device_type": self.device_type,
            "action": self.action.value,
            "rules": dict(self.rules),
            "first": self.first,
            "last": self.last,
            "imsis": list(self.imsis),
            "details": list(self.details),
            "evidence": [
                {"t": o.t, "imsi": o.imsi, "peer": o.peer, "rat": o.rat.value, "sv": o.sv, "imei15": o.imei15}
                for o in self.evidence
            ],
            "closed": dict(self.closed) if self.closed is not None else None,
            "reopened": self.reopened,
            "actions": [dict(a) for a in self.actions],
            "suppressed": self.suppressed,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Case:
        imei = d["imei"]
        evidence = [Observation(e["t"], imei, e["imsi"], e["peer"], Rat(e["rat"]), e["sv"], e.get("imei15"))
                    for e in d["evidence"]]  # fmt: skip
        return cls(imei, d["first"], d["last"], Action(d["action"]), dict(d["rules"]), dict.fromkeys(d["imsis"]),
                   evidence, list(d["details"]), d.get("model"), d.get("device_type"), d.get("status", "open"),
                   d.get("closed"), d.get("reopened", 0), list(d.get("actions", [])),
                   bool(d.get("suppressed", False)))  # fmt: skip


# Rules whose finding is a clone (one IMEI, several subscribers at once): the IMSI judged
# genuine keeps service through an exception pair (Q.5052 §8) while the IMEI is listed.
CLONE_RULES = frozenset({"time_distance", "concurrent_use"})
_LIST_OF = {Action.GREYLIST: "grey", Action.BLOCK: "black"}


def plan_actions(case: Case, finding: Finding, genuine_owner: str) -> list[dict[str, Any]]:
    """The list changes a finding asks for, not yet asked for on this case: the IMEI on
    the greylist or blacklist (``greylist``/``block``), with the rule as source and its
    detail as reason, and, for a clone with ``genuine_owner: earliest``, an exception
    pair for the earliest IMSI of the case. None once an analyst undid the case's changes.
    Appended to ``case.actions`` (state ``requested``) and returned."""
    target = _LIST_OF.get(finding.action)
    if target is None or case.suppressed:
        return []
    source = f"detection:{finding.rule}"
    wanted = [{"op": "add", "list": target, "imei": case.imei14, "imsi": "", "source": source,
               "reason": f"detection {finding.rule}: {finding.detail}"[:200]}]  # fmt: skip
    if finding.rule in CLONE_RULES and genuine_owner == "earliest" and len(case.imsis) >= 2:
        owner = next(iter(case.imsis))
        wanted.append({"op": "add", "list": "exceptions", "imei": case.imei14, "imsi": owner, "source": source,
                       "reason": "detection: the earliest IMSI of the case, judged genuine"})  # fmt: skip
    asked = {(a["list"], a["imsi"]) for a in case.actions if a["op"] == "add"}
    new = [dict(w, state="requested", at=finding.t) for w in wanted if (w["list"], w["imsi"]) not in asked]
    case.actions += new
    return new


def masked(case: dict[str, Any]) -> dict[str, Any]:
    """A case's ``as_dict`` with its IMSIs masked, as the logs mask them (``logging.mask_imsi``)."""
    case["imsis"] = [mask_imsi(i) or i for i in case["imsis"]]
    for e in case["evidence"]:
        e["imsi"] = (mask_imsi(e["imsi"]) or e["imsi"]) if e["imsi"] else None
    for a in case.get("actions", []):
        a["imsi"] = mask_imsi(a["imsi"]) if a["imsi"] else ""
    return case


def add_finding(case: Case | None, finding: Finding, info: TacInfo | None = None) -> Case:
    """``case`` (None: a new one, with the TAC database's ``info``) updated by ``finding``."""
    if case is None:
        case = Case(finding.imei14, finding.t, finding.t, finding.action)
        if info is not None:
            case.model, case.device_type = info.model, info.device_type
    elif case.status == "closed":
        case.status = "open"
        case.reopened += 1
    case.last = max(case.last, finding.t)
    case.rules[finding.rule] = case.rules.get(finding.rule, 0) + 1
    if _STRENGTH[finding.action] > _STRENGTH[case.action]:
        case.action = finding.action
    for imsi in finding.imsis:
        case.imsis[imsi] = None
    for obs in finding.evidence:
        if len(case.evidence) < MAX_EVIDENCE and obs not in case.evidence:
            case.evidence.append(obs)
    if len(case.details) < MAX_EVIDENCE:
        case.details.append(f"{finding.rule}: {finding.detail}")
    return case


class Cases:
    def __init__(self, tac_info: Callable[[str], TacInfo | None] | None = None) -> None:
        self._by_imei: dict[str, Case] = {}
        self._tac_info = tac_info

    def add(self, finding: Finding) -> Case:
        case = self._by_imei.get(finding.imei14)
        info = self._tac_info(finding.imei14[:8]) if case is None and self._tac_info is not None else None
        case = self._by_imei[finding.imei14] = add_finding(case, finding, info)
        return case

    def __len__(self) -> int:
        return len(self._by_imei)

    def get(self, imei14: str) -> Case | None:
        return self._by_imei.get(imei14)

    def all(self) -> list[Case]:
        return sorted(self._by_imei.values(), key=lambda c: (c.first, c.imei14))

    def close(self, imei14: str, at: float, by: str, note: str) -> Case | None:
        case = self._by_imei.get(imei14)
        if case is not None:
            case.close(at, by, note)
        return case
