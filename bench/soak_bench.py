"""Churn soak, 30 minutes (issue 19): the scenario of tests/e2e/test_churn.py (tests/e2e/churn.py)
run ten times longer, sampling every minute. Rewrites the ``## Measured: churn soak`` section of
docs/reliability.md (RSS per 5 minutes) and draws docs/reliability-rss.png.

Run (root: it builds network namespaces): ``.venv/bin/python bench/soak_bench.py [--quick]``
``--quick``: two minutes, a sample every 20 s, nothing written (a smoke run).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
sys.path.insert(0, str(ROOT / "bench"))

import churn  # noqa: E402
from bench_docs import machine, replace_section  # noqa: E402
from netlab import NetLab, lab_available  # noqa: E402
from playwright.sync_api import sync_playwright  # noqa: E402

DOC = ROOT / "docs" / "reliability.md"
SECTION = "## Measured: churn soak"
PLOT = ROOT / "docs" / "reliability-rss.png"
RAW = ROOT / "docs" / "reliability-soak.json"


def run(args: argparse.Namespace) -> dict[str, Any]:
    duration, every = (120.0, 20.0) if args.quick else (args.minutes * 60.0, 60.0)
    outside: list[str] = []
    started, load = time.strftime("%Y-%m-%d %H:%M"), machine()
    with NetLab() as lab, sync_playwright() as pw, churn.soak(pw, lab, outside) as s:
        fig = churn.run(s, duration=duration, every=3.0, sample_every=every)
        fig["id_table_empty_after_s"] = churn.everyone_leaves(s)
    fig.update(machine=load, started=started, quick=args.quick, outside_requests=outside,
               finished_load=" ".join(f"{x:.1f}" for x in os.getloadavg()))
    return fig


def plot(fig: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples = fig["samples"]
    minutes = [s["t_s"] / 60 for s in samples]
    figure, ax = plt.subplots(figsize=(7, 3.2), dpi=110)
    for key, label in (
        ("stable_browser_rss_mb", "Chromium with the two long-lived tabs"),
        ("agent_rss_mb", "long-lived agent (CPython)"),
        ("server_rss_mb", "kibitz serve"),
    ):
        ax.plot(minutes, [s[key] for s in samples], marker=".", label=label)
    ax.set_xlabel("minutes of churn")
    ax.set_ylabel("RSS (MB)")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="center right")
    ax.set_title(f"RSS while members join and leave ({fig['tab_joins'] + fig['agent_joins']} joins)",
                 fontsize=9)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def render(fig: dict[str, Any]) -> str:
    samples = fig["samples"]
    rows = []
    for s in samples:
        if round(s["t_s"] / 60) % 5 == 0 or s is samples[-1]:
            heap = ", ".join(f"{v:.0f}" for v in s["tab_js_heap_mb"].values())
            rows.append(
                f"| {s['t_s'] / 60:.0f} | {s['server_rss_mb']:.0f} | {s['stable_browser_rss_mb']:.0f} | "
                f"{heap} | {s['agent_rss_mb']:.0f} | {s['broker_ids']:.0f} |"
            )
    joins = fig["tab_joins"] + fig["agent_joins"]
    leaves = fig["tab_leaves"] + fig["agent_leaves"]
    crashes = fig["tab_crashes"] + fig["agent_kills"]
    return "\n".join([
        SECTION,
        "",
        f"Run {fig['started']} with `bench/soak_bench.py`: {fig['duration_s'] / 60:.0f} minutes"
        + (" (shortened with `--minutes` on a busy shared machine; the full soak is 30)"
           if fig["duration_s"] < 29 * 60 else "") + ". "
        f"{fig['machine']}; "
        f"load average at the end {fig['finished_load']}. Raw figures: `docs/reliability-soak.json`.",
        "",
        f"{joins} joins ({fig['tab_joins']} tabs, {fig['agent_joins']} agents), {leaves} clean departures "
        "and "
        f"{crashes} crashes ({fig['tab_crashes']} hung tabs killed, {fig['agent_kills']} agents SIGKILLed); "
        f"{fig['failed_joins']} joins that did not complete in 60 s. Between the three long-lived members "
        f"{fig['messages_between_long_lived']} numbered messages, none lost or duplicated. Rosters back to "
        f"exactly the long-lived members {fig['rosters_clean_after_s']} s after the last churner left (no "
        f"zombie); the broker's id table empty {fig['id_table_empty_after_s']} s after everyone left.",
        "",
        "![RSS during the churn soak](reliability-rss.png)",
        "",
        "| minute | kibitz serve RSS (MB) | Chromium, 2 long-lived tabs (MB) | their JS heaps (MB) | "
        "agent RSS (MB) | ids at the broker |",
        "|---|---|---|---|---|---|",
        *rows,
        "",
    ])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    reason = lab_available()
    if reason is not None:
        print(f"soak bench skipped: {reason}")
        return 0
    fig = run(args)
    text = render(fig)
    print(text)
    if not args.no_write and not args.quick:
        RAW.write_text(json.dumps(fig, indent=1) + "\n")
        plot(fig, PLOT)
        replace_section(SECTION, text, DOC)
    else:
        plot(fig, Path("/tmp") / "reliability-rss-quick.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
