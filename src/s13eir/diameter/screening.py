"""Screening of incoming requests before an application sees them (RFC 6733
§6.1, §7): header bits, command and application support, Destination-Host, and
the command grammar. Mirrors the role of OTP diameter_traffic's error answers."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .answers import error_answer, lenient_avps
from .avp import Avp, AvpLengthError, decode_avps
from .constants import (
    APPLICATION_UNSUPPORTED,
    AVP_DESTINATION_HOST,
    AVP_DESTINATION_REALM,
    COMMAND_UNSUPPORTED,
    FLAG_ERROR,
    FLAG_PROXIABLE,
    INVALID_AVP_LENGTH,
    INVALID_HDR_BITS,
    REALM_NOT_SERVED,
    UNABLE_TO_DELIVER,
)
from .dictionary import CommandDef, Dictionary
from .header import HEADER_LENGTH, Header
from .validate import MAX_AVP_DEPTH, check_avps


@dataclass(frozen=True, slots=True)
class Rejected:
    result_code: int
    answer: bytes
    detail: str


@dataclass(frozen=True, slots=True)
class Screening:
    """Local facts the screening needs: who we are and which applications we serve."""

    dictionary: Dictionary
    origin_avps: bytes
    origin_host: str
    origin_realm: str
    applications: frozenset[int]
    check_destination_realm: bool = False
    answer_extras: dict[int, bytes] | None = None  # application id -> AVPs every answer carries
    max_avp_depth: int = MAX_AVP_DEPTH  # grouped AVPs nested deeper are refused (5004)


def screen(header: Header, frame: bytes, s: Screening) -> tuple[CommandDef, list[Avp]] | Rejected:
    extra = (s.answer_extras or {}).get(header.application_id, b"")

    def reject(code: int, detail: str, avps: Sequence[Avp] | None = None, failed: bytes | None = None) -> Rejected:
        use = lenient_avps(frame) if avps is None else avps
        return Rejected(code, error_answer(header, use, s.origin_avps, code, failed_avp=failed, message=detail,
                                           extra=extra), detail)  # fmt: skip

    if header.application_id != 0 and header.application_id not in s.applications:
        return reject(APPLICATION_UNSUPPORTED, f"application {header.application_id} is not supported")
    command = s.dictionary.command(header.application_id, header.command_code)
    if command is None:
        return reject(COMMAND_UNSUPPORTED, f"command {header.command_code} is not supported")
    if header.flags & FLAG_ERROR:
        return reject(INVALID_HDR_BITS, "the E-bit is set in a request")
    if bool(header.flags & FLAG_PROXIABLE) != ("PXY" in command.request_flags):
        return reject(INVALID_HDR_BITS, f"the P-bit does not match the {command.name} command format")
    try:
        avps = decode_avps(frame, HEADER_LENGTH)
    except AvpLengthError as exc:
        return reject(INVALID_AVP_LENGTH, str(exc), exc.partial, exc.failed)
    for a in avps:
        if a.vendor:
            continue
        if a.code == AVP_DESTINATION_HOST and a.data.decode("utf-8", "replace").lower() != s.origin_host.lower():
            return reject(UNABLE_TO_DELIVER, "Destination-Host is not this node", avps)
        if (
            a.code == AVP_DESTINATION_REALM
            and s.check_destination_realm
            and a.data.decode("utf-8", "replace").lower() != s.origin_realm.lower()
        ):
            return reject(REALM_NOT_SERVED, "Destination-Realm is not served by this node", avps)
    problem = check_avps(avps, command.request, s.dictionary, command.request_ignored, s.max_avp_depth)
    if problem is not None:
        return reject(problem.result_code, problem.message, avps, problem.failed_avp)
    return command, avps
