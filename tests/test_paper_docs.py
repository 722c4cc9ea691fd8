"""docs/paper-check.md and docs/paper-plans.md hold the numbers this checkout's code gives:
tools/paper_docs.py --check regenerates both in memory and compares."""
from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _tool():
    spec = importlib.util.spec_from_file_location("paper_docs", ROOT / "tools" / "paper_docs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_paper_docs_are_current(capsys):
    assert _tool().main(["--check"]) == 0, capsys.readouterr().err


def test_paper_check_puts_the_searchs_picks_beside_table_1():
    text = (ROOT / "docs" / "paper-check.md").read_text()
    for name in ("Panda-1B", "Surefire-1B", "Panda-3B", "Surefire-3B"):
        assert f"| {name} |" in text
    # Table 1's measured gains appear as the paper gives them (H200)
    assert "| Surefire-1B | 2560 | 9 | 3.60 | +47 % | +21 % |" in text
    assert "| Surefire-3B | 4096 | 7 | 1.00 | +17 % | +12 % |" in text
