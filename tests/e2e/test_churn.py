"""Churn soak, CI length (issue 19): three minutes of members joining and leaving every few seconds
(tabs and agents; a quarter of the departures are crashes) while three long-lived members stream
to each other at 10/s. Nothing they send may be lost or duplicated, no departed member may linger
on a roster, their memory and the server's must not run away, and the broker's id table must be
empty once everyone has left. The 30-minute version with its RSS curve is bench/soak_bench.py.
"""

from __future__ import annotations

import churn
import pytest
from netlab import lab_or_skip
from playwright.sync_api import Playwright

pytestmark = pytest.mark.timeout(900)


def test_three_minutes_of_churn(playwright_session: Playwright) -> None:
    outside: list[str] = []
    with lab_or_skip() as lab, churn.soak(playwright_session, lab, outside) as s:
        fig = churn.run(s, duration=180, every=3.0, sample_every=30)
        print(fig)
        joins = fig["tab_joins"] + fig["agent_joins"]
        assert fig["tab_joins"] >= 3 and fig["agent_joins"] >= 3 and joins >= 12, fig
        first, last = fig["samples"][0], fig["samples"][-1]
        # Flat within generous bounds on a shared 2-core machine: leaks would grow with the churn.
        assert last["server_rss_mb"] < first["server_rss_mb"] + 40, fig["samples"]
        assert last["agent_rss_mb"] < first["agent_rss_mb"] + 60, fig["samples"]
        emptied = churn.everyone_leaves(s)
        assert emptied < 30
        for tab in s.tabs:
            assert tab.errors == [], f"{tab.name}: uncaught page errors {tab.errors}"
    assert outside == [], f"requests left the lab: {outside}"
