"""Medians over the rounds, one comparison table, the issue's targets as gateway/mod_auth_openidc ratios.

Ratios of figures from the same run are what carry between machines; absolute req/s on a shared 2-core box are
noise. Each ratio also shows its per-round range, so a PASS that one noisy round could flip is visible as such.
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass
from pathlib import Path

Rounds = dict[str, dict[str, list[float]]]  # target name → figure → one value per round

# column key, header, format
COLUMNS = (
    ("rps", "req/s", "{:.0f}"),
    ("p50_ms", "p50 ms", "{:.2f}"),
    ("p99_ms", "p99 ms", "{:.2f}"),
    ("per_cpu_s", "req/CPU-s", "{:.0f}"),
    ("signin_cpu_ms", "sign-in CPU ms", "{:.2f}"),
    ("redirects_per_cpu_s", "302s/CPU-s", "{:.0f}"),
    ("socket_errors", "sock err", "{:.0f}"),
)


@dataclass(frozen=True)
class Goal:
    """One of the issue's targets: gateway figure / mod_auth_openidc figure, compared with ``bound``."""

    label: str
    key: str
    higher_is_better: bool
    bound: float
    store: str | None = None  # None: the goal holds for every session store

    def applies(self, store: str) -> bool:
        return self.store in (None, store)

    def met(self, ratio: float) -> bool:
        return ratio >= self.bound if self.higher_is_better else ratio <= self.bound


GOALS = (
    Goal("authenticated requests per CPU-second", "per_cpu_s", True, 1.5, "cookie"),
    Goal("authenticated requests per CPU-second", "per_cpu_s", True, 1.2, "redis"),
    Goal("req/s (GATEWAY_WORKERS at its default)", "rps", True, 1.0),
    Goal("p99 latency", "p99_ms", False, 1.0),
    Goal("CPU per full sign-in", "signin_cpu_ms", False, 1.0),
    Goal("unauthenticated 302s per CPU-second", "redirects_per_cpu_s", True, 1.0),
)


def medians(rounds: dict[str, list[float]]) -> dict[str, float]:
    return {key: statistics.median(values) for key, values in rounds.items() if values}


def table(rows: dict[str, dict[str, float]]) -> list[str]:
    width = max(len(name) for name in rows) + 2
    lines = [" " * width + "".join(f"{header:>16}" for _, header, _ in COLUMNS)]
    for name, figures in rows.items():
        cells = [_cell(figures.get(key), fmt) for key, _, fmt in COLUMNS]
        lines.append(f"{name:<{width}}" + "".join(f"{cell:>16}" for cell in cells))
    return lines


def _cell(value: float | None, fmt: str) -> str:
    return "–" if value is None or math.isnan(value) else fmt.format(value)


def ratio_lines(peer: str, gateways: dict[str, str], rounds: Rounds, baseline_suffix: str) -> list[str]:
    """PASS/FAIL per goal for each gateway of this checkout (name → session store) against ``peer``.

    A baseline gateway's ratio, when there is one, goes in brackets on the same line: before/after at a glance.
    """
    lines = []
    for goal in GOALS:
        for name, store in gateways.items():
            if goal.applies(store) and rounds[name].get(goal.key) and rounds[peer].get(goal.key):
                line = _ratio_line(goal, name, peer, rounds)
                if rounds.get(name + baseline_suffix, {}).get(goal.key):
                    line += f"; baseline {_ratio(rounds[name + baseline_suffix][goal.key], rounds[peer][goal.key]):.2f}"
                lines.append(line + ")")
    return lines


def _ratio_line(goal: Goal, name: str, peer: str, rounds: Rounds) -> str:
    ours, theirs = rounds[name][goal.key], rounds[peer][goal.key]
    ratio = _ratio(ours, theirs)
    per_round = [a / b for a, b in zip(ours, theirs, strict=False) if b] or [math.nan]
    verdict = "PASS" if goal.met(ratio) else "FAIL"
    sign = "≥" if goal.higher_is_better else "≤"
    spread = f"rounds {min(per_round):.2f}–{max(per_round):.2f}"
    return f"  {verdict}  {goal.label}: {name} / {peer} = {ratio:.2f} (target {sign} {goal.bound:g}; {spread}"


def _ratio(ours: list[float], theirs: list[float]) -> float:
    """Ratio of the medians (the table's figures); NaN when the peer's median is 0."""
    denominator = statistics.median(theirs)
    return statistics.median(ours) / denominator if denominator else math.nan


def change_lines(pairs: dict[str, str], rows: dict[str, dict[str, float]]) -> list[str]:
    """This checkout / baseline for each column (for the ms columns, below 1 is better)."""
    lines = []
    for current, baseline in pairs.items():
        cells = []
        for key, header, _ in COLUMNS[:-1]:
            if rows[current].get(key) and rows[baseline].get(key):
                cells.append(f"{header} {rows[current][key] / rows[baseline][key]:.2f}")
        lines.append(f"  {current} / {baseline}: " + ", ".join(cells))
    return lines


def save(path: Path, document: dict[str, object]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n")
    return path
