"""docs/method.md's key tables against the config (scripts/config_keys_doc.py): a key added to the
config without its row, or a default or help text changed, fails here."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest
from tests.benchmarks.scripts import load_file

from twm.config_files import describe_keys

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "config_keys_doc.py"


def load() -> ModuleType:
    return load_file(SCRIPT)


def test_the_method_page_lists_every_key_with_its_default_and_meaning() -> None:
    doc = load()
    assert doc.main(["--check"]) == 0, "run python scripts/config_keys_doc.py"
    page = doc.PAGE.read_text()
    rows = [line for line in page[page.index(doc.START) :].splitlines() if line.startswith("| `")]
    assert len(rows) == len(describe_keys())
    assert "| `dynamics.reward_bins` | `symlog` | with reward_head 'twohot'" in page


def test_a_stale_page_is_found_and_rewritten(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    doc = load()
    stale = doc.PAGE.read_text().replace("| `replay.visit_rate` |", "| `replay.visit_rates` |")
    page = tmp_path / "method.md"
    page.write_text(stale)
    monkeypatch.setattr(doc, "PAGE", page)
    assert doc.main(["--check"]) == 1
    assert doc.main([]) == 0
    assert page.read_text() == doc.page_with_tables(stale) and doc.main(["--check"]) == 0
