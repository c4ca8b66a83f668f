"""The results: a JSON-able summary, the final table (rich or plain text), the live view.

The summary dict is the one source: the JSON file, the table and the exit status are
all read from it, so they cannot disagree.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from .stats import Stats
from .wire import outcome_name

__all__ = ["LiveView", "exit_status", "format_plain", "render_table", "summary"]

_PERCENTILES = (("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("p999", 99.9))
_REFRESH_S = 0.5


def summary(stats: Stats, params: Mapping[str, Any], generator: Mapping[str, Any] | None = None) -> dict[str, Any]:
    elapsed = stats.elapsed_s()
    lat = stats.latency
    out: dict[str, Any] = {
        "requests": stats.requests,
        "answers": stats.answers,
        "answers_per_s": round(stats.answers / elapsed, 1) if elapsed > 0 else 0.0,
        "elapsed_s": round(elapsed, 3),
        "latency_us": {
            **{name: lat.percentile(p) for name, p in _PERCENTILES},
            "max": lat.max,
            "min": lat.min,
            "mean": round(lat.mean, 1),
        },
        "send_lag_us": (
            {"p50": stats.send_lag.percentile(50), "p99": stats.send_lag.percentile(99), "max": stats.send_lag.max}
            if stats.send_lag.total
            else None
        ),
        "result_codes": {
            **{str(code): n for code, n in sorted(stats.result_codes.items())},
            **{f"http-{code}": n for code, n in sorted(stats.http_codes.items())},  # --sbi
        },
        "equipment_status": {outcome_name(s): n for s, n in sorted(stats.equipment_status.items())},
        "mismatches": stats.mismatches,
        "mismatch_examples": [
            {"imei": m.imei, "imsi": m.imsi, "expected": m.expected, "got": m.got, "mme": m.mme} for m in stats.examples
        ],
        "timeouts": stats.timeouts,
        "dropped": stats.dropped,
        "busy": stats.busy,
        "abated": stats.abated,
        "doic_reports": stats.doic_reports,
        "late_answers": stats.late_answers,
        "errors": stats.error_total,
        "error_kinds": dict(sorted(stats.errors.items())),
        "error_examples": list(stats.error_examples),
        "warmup": {"requests": stats.warmup_requests, "answers": stats.warmup_answers},
        "mmes_connected": stats.mmes_connected,
        "params": dict(params),
        "latency_histogram": lat.to_dict(),  # to merge runs made from several hosts
    }
    if generator is not None:
        out["generator"] = dict(generator)
    return out


def exit_status(result: Mapping[str, Any]) -> int:
    """0 when every request got the expected answer in time and nothing failed."""
    return 0 if result["mismatches"] == 0 and result["timeouts"] == 0 and result["errors"] == 0 else 1


def _ms(us: int) -> str:
    return f"{us / 1000:.3f} ms"


def _rows(result: Mapping[str, Any]) -> list[tuple[str, str]]:
    lat = result["latency_us"]
    rows = [
        ("requests", f"{result['requests']:,}"),
        ("answers", f"{result['answers']:,}"),
        ("answers/s", f"{result['answers_per_s']:,.1f}"),
        ("elapsed", f"{result['elapsed_s']:.3f} s"),
        ("latency p50 / p90", f"{_ms(lat['p50'])} / {_ms(lat['p90'])}"),
        ("latency p99 / p99.9", f"{_ms(lat['p99'])} / {_ms(lat['p999'])}"),
        ("latency max", _ms(lat["max"])),
    ]
    if result["send_lag_us"] is not None:
        lag = result["send_lag_us"]
        rows.append(("send lag p99 / max", f"{_ms(lag['p99'])} / {_ms(lag['max'])}"))
    rows.append(("result codes", ", ".join(f"{c}: {n:,}" for c, n in result["result_codes"].items()) or "-"))
    rows.append(("equipment status", ", ".join(f"{s}: {n:,}" for s, n in result["equipment_status"].items()) or "-"))
    if result.get("busy"):
        rows.append(("busy (3004)", f"{result['busy']:,} answered DIAMETER_TOO_BUSY: the EIR shedding load"))
    if result.get("doic_reports") or result.get("abated"):
        rows.append(("DOIC", f"{result['abated']:,} not sent (abated), {result['doic_reports']:,} overload reports"))
    rows.append(("mismatches", f"{result['mismatches']:,}"))
    rows.extend(
        ("  e.g.", f"{m['imei']} imsi {m['imsi'] or '-'}: expected {m['expected']}, got {m['got']} ({m['mme']})")
        for m in result["mismatch_examples"][:5]
    )
    timeouts = f"{result['timeouts']:,}"
    if result["dropped"]:
        timeouts += f" ({result['dropped']:,} never sent: send buffer full)"
    rows.append(("timeouts", timeouts))
    kinds = ", ".join(f"{k}: {n:,}" for k, n in result["error_kinds"].items())
    rows.append(("errors", f"{result['errors']:,}" + (f" ({kinds})" if kinds else "")))
    rows.extend(("  e.g.", e) for e in result["error_examples"][:5])
    return rows


def render_table(result: Mapping[str, Any]) -> Table:
    table = Table(title="s13eir load", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    for name, value in _rows(result):
        bad = name in ("mismatches", "timeouts", "errors") and not value.startswith("0")
        table.add_row(name, Text(value, style="red" if bad else ""))
    return table


def format_plain(result: Mapping[str, Any]) -> str:
    rows = _rows(result)
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


class LiveView:
    """The live display: achieved rate, p50/p99 so far, errors and timeouts, ~2/s."""

    def __init__(self, console: Console, mode: str) -> None:
        self._live = Live(console=console, auto_refresh=False, transient=True)
        self._mode = mode
        self._started = time.monotonic()
        self._last = (time.monotonic(), 0)
        self._shown = 0.0
        self._rate = 0.0

    def __enter__(self) -> LiveView:
        self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._live.__exit__(None, None, None)

    def update(self, stats: Stats, phase: str) -> None:
        now = time.monotonic()
        if now - self._shown < _REFRESH_S * 0.9:
            return
        self._shown = now
        t0, answered0 = self._last
        answered = stats.answers + stats.warmup_answers
        if now > t0:
            self._rate = (answered - answered0) / (now - t0)
        self._last = (now, answered)
        # Short lines rather than a wide table: they stay readable in an 80-column terminal.
        progress = Text(f"{phase:<10} {now - self._started:6.1f} s   {self._rate:>9,.0f} answers/s   ")
        progress.append(f"requests {stats.requests:,}   answers {stats.answers:,}")
        health = Text(f"latency p50 {_ms(stats.latency.percentile(50))}   p99 {_ms(stats.latency.percentile(99))}   ")
        for name, n in (("mismatches", stats.mismatches), ("timeouts", stats.timeouts), ("errors", stats.error_total)):
            health.append(f"{name} {n:,}   ", style="red" if n else "")
        self._live.update(Group(Text(f"s13eir load: {self._mode}", style="bold"), progress, health), refresh=True)
