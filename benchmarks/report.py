"""Render results as Markdown tables (paste-ready for docs/benchmarks.md), check targets."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from benchmarks.registry import SECTIONS, SYSTEM_TITLES, SYSTEMS, Result

SECTION_TITLES = {
    "floors": "Floors (this file system, this run)",
    "power-loss safe": "Power-loss safe: durably fsync=True · @coji/durably WAL "
    "synchronous=FULL · DBOS default SQLite (synchronous=FULL)",
    "process-crash safe": "Process-crash safe: durably fsync=False · @coji/durably WAL "
    "synchronous=NORMAL · DBOS SQLite WAL synchronous=NORMAL",
    "reads": "Reads",
}


def fmt_value(value: float | None, unit: str, error: str | None = None) -> str:
    if value is None:
        reason = (error or "not measured").replace("|", "/")
        return f"n/a ({reason[:70]})"
    if unit == "/s":
        return f"{value:,.0f} /s"
    if unit == "x":
        return f"{value:.2f}x"
    if unit == "%":
        return f"{value:.2f} %"
    if value < 1e-3:
        return f"{value * 1e6:,.1f} µs"
    if value < 1:
        return f"{value * 1e3:,.1f} ms"
    return f"{value:,.2f} s"


def speedup(durably: Result | None, peer: Result | None) -> str:
    """How many times faster durably is (> 1: faster, < 1: slower)."""
    if not durably or not peer or durably.value is None or peer.value is None:
        return ""
    if not durably.value or not peer.value or durably.unit in ("x", "%"):
        return ""
    x = durably.value / peer.value if durably.higher_is_better else peer.value / durably.value
    return f"{x:.2f}x"


def _sections(results: list[Result]) -> list[str]:
    seen = [s for s in SECTIONS if any(r.section == s for r in results)]
    extra = [r.section for r in results if r.section not in SECTIONS]
    return seen + list(dict.fromkeys(extra))


def _rows(results: list[Result], section: str) -> list[str]:
    return list(dict.fromkeys(r.row for r in results if r.section == section))


def render(results: list[Result]) -> str:
    floors = {r.row: r for r in results if r.section == "floors"}
    out: list[str] = []
    for section in _sections(results):
        out.append(f"**{SECTION_TITLES.get(section, section)}**")
        out.append("")
        if section == "floors":
            out.append("| floor | per operation | note |")
            out.append("|---|---:|---|")
            for row in _rows(results, section):
                r = floors[row]
                out.append(f"| {row} | {fmt_value(r.value, r.unit, r.error)} | {r.note} |")
            out.append("")
            continue
        systems = [s for s in SYSTEMS if any(r.section == section and r.system == s for r in results)]
        systems += list(
            dict.fromkeys(r.system for r in results if r.section == section and r.system not in systems)
        )
        peers = [s for s in systems if s != "durably"]
        head = ["figure", *(SYSTEM_TITLES.get(s, s) for s in systems)]
        has_floor = any(r.section == section and r.floor for r in results)
        if has_floor:
            head += ["floor", "durably ÷ floor"]
        if "durably" in systems:
            head += [f"durably speed-up vs {SYSTEM_TITLES.get(p, p)}" for p in peers]
        head.append("notes")
        out.append("| " + " | ".join(head) + " |")
        out.append("|---|" + "---:|" * (len(head) - 2) + "---|")
        for row in _rows(results, section):
            cell = {r.system: r for r in results if r.section == section and r.row == row}
            line = [row]
            line += [
                fmt_value(cell[s].value, cell[s].unit, cell[s].error) if s in cell else "" for s in systems
            ]
            d = cell.get("durably")
            if has_floor:
                fv = None
                if d and d.floor:
                    fv = (
                        d.floor_value
                        if d.floor_value is not None
                        else getattr(floors.get(d.floor), "value", None)
                    )
                line.append(fmt_value(fv, "s") + f" ({d.floor})" if fv is not None and d else "")
                line.append(f"{d.value / fv:.2f}x" if d and fv and d.value is not None else "")
            if "durably" in systems:
                line += [speedup(d, cell.get(p)) for p in peers]
            notes = [
                f"{SYSTEM_TITLES.get(s, s)}: {cell[s].note}"
                for s in systems
                if s in cell and cell[s].note and s != "durably"
            ]
            if d and d.note:
                notes.insert(0, d.note)
            line.append("; ".join(notes).replace("|", "/"))
            out.append("| " + " | ".join(line) + " |")
        out.append("")
    out.append(
        "Speed-up: how many times faster durably is than the peer at equal durability "
        "(above 1 = faster; rates and times alike). durably ÷ floor: a step's cost "
        "over the matching floor, measured again in batches between the run's steps."
    )
    return "\n".join(out)


# -- DESIGN.md speed targets ------------------------------------------------------------


@dataclass
class Lookup:
    results: list[Result]

    def get(self, section: str, row_prefix: str, system: str) -> Result | None:
        for r in self.results:
            if r.section == section and r.row.startswith(row_prefix) and r.system == system:
                return r if r.value is not None else None
        return None

    def faster(self, section: str, row_prefix: str, peer: str) -> bool | None:
        d, p = self.get(section, row_prefix, "durably"), self.get(section, row_prefix, peer)
        if d is None or p is None:
            return None
        assert d.value is not None
        assert p.value is not None
        return d.value > p.value if d.higher_is_better else d.value < p.value


def _all(*xs: bool | None) -> bool | None:
    if any(x is False for x in xs):
        return False
    return None if any(x is None for x in xs) else True


def _step_floor(q: Lookup) -> bool | None:
    d = q.get("power-loss safe", "step checkpoint", "durably")
    if d is None or not d.floor_value:
        return None
    assert d.value is not None
    return d.value <= 1.5 * d.floor_value


def _get_runs(q: Lookup) -> bool | None:
    rows = [
        r for r in q.results if r.section == "reads" and r.row.endswith("first call") and r.value is not None
    ]
    if len(rows) < 2:
        return None
    small, big = rows[0], rows[-1]
    n_small, n_big = (int(r.row.split(", ")[1].split(" ")[0].replace(",", "")) for r in (small, big))
    assert small.value is not None
    assert big.value is not None
    sublinear = big.value / small.value < (n_big / n_small) / 3
    if n_big < 100_000:
        return None
    return big.value < 0.1 and sublinear


def _replay(q: Lookup) -> bool | None:
    d = q.get("power-loss safe", "replay 10,000", "durably")
    return None if d is None else d.value is not None and d.value < 0.3


TARGETS: list[tuple[str, Callable[[Lookup], bool | None]]] = [
    ("step checkpoint, fsync=True: ≤ 1.5x the one-fsync floor", _step_floor),
    (
        "step checkpoint, fsync=True: faster than @coji/durably (WAL FULL)",
        lambda q: q.faster("power-loss safe", "step checkpoint", "coji"),
    ),
    (
        "step checkpoint, fsync=False: faster than @coji/durably (WAL NORMAL)",
        lambda q: q.faster("process-crash safe", "step checkpoint", "coji"),
    ),
    (
        "trigger (no worker): faster than both peers at equal durability",
        lambda q: _all(
            *(
                q.faster(s, "trigger", p)
                for s in ("power-loss safe", "process-crash safe")
                for p in ("coji", "dbos")
            )
        ),
    ),
    (
        "500 runs x 10 steps end to end: faster than both peers at equal durability",
        lambda q: _all(
            *(
                q.faster(s, "500 runs", p)
                for s in ("power-loss safe", "process-crash safe")
                for p in ("coji", "dbos")
            )
        ),
    ),
    ("replay of 10,000 completed steps: next step in < 0.3 s (fsync=True)", _replay),
    ("get_runs(limit=50) over 100,000 runs: < 100 ms (first call) and not linear", _get_runs),
]


def check_targets(results: list[Result]) -> list[tuple[str, str]]:
    q = Lookup(results)
    out = []
    for label, fn in TARGETS:
        verdict = fn(q)
        out.append((label, {True: "met", False: "MISSED", None: "not measured"}[verdict]))
    return out


def render_targets(checks: list[tuple[str, str]]) -> str:
    lines = ["**DESIGN.md speed targets (this run)**", "", "| target | verdict |", "|---|---|"]
    lines += [f"| {label} | {verdict} |" for label, verdict in checks]
    return "\n".join(lines)
