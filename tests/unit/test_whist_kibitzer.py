"""The kibitzer's brain (apps/whist/whist/brain.py) and its command line (apps/whist/kibitzer.py),
on LocalNet tables: what it says about each play of the seat it watches, that a plugged-in model is
shown that seat's view and nothing more, and how ``kibitz agent run`` hands it ``--watch``."""

from __future__ import annotations

import asyncio
import importlib.util
import sys
from pathlib import Path
from typing import Any

import pytest
from whist import rules
from whist.brain import Commentator, Moment, PromptBrain, RuleBrain, show
from whist.client import played_by
from whist.localnet import LocalNet
from whist.scenarios import KEYS, drive
from whist.table import Table

from kibitz.agent.cli import agent_options

ROOT = Path(__file__).resolve().parents[2]
KIBITZER = ROOT / "apps" / "whist" / "kibitzer.py"


def load_kibitzer() -> Any:
    spec = importlib.util.spec_from_file_location("kibitzer_under_test", KIBITZER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def watched_deal() -> tuple[LocalNet, Table, list[tuple[dict[str, Any], list[str] | None]]]:
    """Ann and Bob play a deal; the kibitzer watches South (Ann's seat) from the start, allowed."""
    net = LocalNet()
    ann = net.join("m-ann", name="Ann", key=KEYS["ann"])
    net.join("m-bob", name="Bob", key=KEYS["bob"])
    kib = net.join("m-kib", name="Kibitzer", watch=2, agent=True)
    views: list[tuple[dict[str, Any], list[str] | None]] = []

    def snap() -> None:
        rec = kib.client.hand_record()
        views.append((kib.view(), list(rec["cards"]) if rec else None))

    kib.on_change = snap
    net.run(0.1)
    assert ann.client.seat() == 2
    ann.allow("m-kib", 2)

    def done() -> bool:
        pub = ann.client.pub
        return bool(pub and pub["deal"] and pub["deal"]["phase"] == "done")

    drive(net, done)
    return net, kib, views


def test_the_rule_brain_calls_every_play_of_the_watched_seat_and_the_deal() -> None:
    _, kib, views = watched_deal()
    commentator = Commentator(2)
    brain = RuleBrain()
    moments = [m for view, dealt in views for m in commentator.moments(view, dealt)]
    plays = [m for m in moments if m.kind == "play"]
    assert len(plays) == 13 and [m.trick_no for m in plays] == list(range(1, 14))
    deal = kib.client.pub["deal"]  # type: ignore[index]
    assert [m.card for m in plays] == played_by(deal, 2)
    lines = [brain.comment(m) for m in moments]
    assert all(isinstance(t, str) and t for t in lines)
    for m, text in zip(plays, lines, strict=False):
        assert text is not None and "South" in text
        assert show(m.card) in text
        assert text.endswith("Sound.") or "I'd have played" in text or "forced" in text
    assert lines[-1] is not None and lines[-1].startswith("Deal over") and "checks out" in lines[-1]


def test_the_rule_brain_names_situations() -> None:
    brain = RuleBrain()
    base = {"kind": "play", "seat": 2, "deal": "t.1", "trump": "S", "trick_no": 3}
    ruff = Moment(**base, card="2S", hand_before=("2S", "9C"), trick_before=("KH", "AH"), leader=0)
    assert (brain.comment(ruff) or "").startswith("South ruffs with 2♠: taking the trick.")
    # North led the king, East played low: South's ace overtakes the partner's winner
    waste = Moment(**base, card="AH", hand_before=("AH", "3H"), trick_before=("KH", "2H"), leader=0)
    text = brain.comment(waste) or ""
    assert "overtakes the partner with A♥" in text and "I'd have played 3♥" in text
    forced = Moment(**base, card="3H", hand_before=("3H", "9C"), trick_before=("2H",), leader=1)
    cheap = Moment(**base, card="AH", hand_before=("AH", "QH"), trick_before=("2H", "JH"), leader=0)
    assert "wins with A♥: though Q♥ would do. I'd have played Q♥." in (brain.comment(cheap) or "")
    assert "forced" in (brain.comment(forced) or "")


def test_a_model_brain_sees_only_the_watched_seats_view() -> None:
    _, kib, views = watched_deal()
    prompts: list[str] = []

    async def model(prompt: str) -> str:
        prompts.append(prompt)
        return "Nice one."

    brain = PromptBrain(model)
    commentator = Commentator(2)
    moments = [m for view, dealt in views for m in commentator.moments(view, dealt)]
    said = [asyncio.run(brain.comment(m)) for m in moments if m.kind == "play"]
    assert said == ["Nice one."] * 13
    deal = kib.client.pub["deal"]  # type: ignore[index]
    hands = rules.deal_hands(rules.shuffle(rules.deck_seed(deal["id"], deal["reveal"])), deal["dealer"])
    tricks = [t["cards"] for t in deal["tricks"]]
    for n, prompt in enumerate(prompts):
        public = {c for t in tricks[: n + 1] for c in t}  # what was on the table by then
        for seat in (0, 1, 3):
            for card in set(hands[seat]) - public:
                assert f" {show(card)}" not in prompt and f"{show(card)}," not in prompt, (card, prompt)


def test_setup_parses_the_seat_and_kibitz_agent_run_passes_it() -> None:
    kib = load_kibitzer()
    for text, seat in (("S", 2), ("south", 2), ("n", 0), ("3", 3), ("West", 3)):
        assert kib.setup(["--watch", text])["meta"] == {"whist": {"watch": seat}}
    options = agent_options(kib, ["--watch=E", "--quiet-seconds", "0"])
    assert options["seat"] == 1 and options["name"] == "Kibitzer (East)" and options["quiet"] == 0.0
    with pytest.raises(ValueError, match="refused its arguments"):
        agent_options(kib, ["--watch", "X"])
    with pytest.raises(ValueError, match="refused its arguments"):
        agent_options(kib, [])  # --watch is required
    summarizer = load_module(ROOT / "agent" / "examples" / "summarizer.py")
    with pytest.raises(ValueError, match="has no setup"):
        agent_options(summarizer, ["--watch", "S"])
    assert agent_options(summarizer, []) == {}


def load_module(path: Path) -> Any:
    spec = importlib.util.spec_from_file_location(f"mod_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
