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
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Case:
        imei = d["imei"]
        evidence = [Observation(e["t"], imei, e["imsi"], e["peer"], Rat(e["rat"]), e["sv"], e.get("imei15"))
                    for e in d["evidence"]]  # fmt: skip
        return cls(imei, d["first"], d["last"], Action(d["action"]), dict(d["rules"]), dict.fromkeys(d["imsis"]),
                   evidence, list(d["details"]), d.get("model"), d.get("device_type"), d.get("status", "open"),
                   d.get("closed"), d.get("reopened", 0))  # fmt: skip


def masked(case: dict[str, Any]) -> dict[str, Any]:
    """A case's ``as_dict`` with its IMSIs masked, as the logs mask them (``logging.mask_imsi``)."""
    case["imsis"] = [mask_imsi(i) or i for i in case["imsis"]]
    for e in case["evidence"]:
        e["imsi"] = (mask_imsi(e["imsi"]) or e["imsi"]) if e["imsi"] else None
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
