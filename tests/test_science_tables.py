"""Every study number in docs/science.md and README.md comes from the committed results: the
generated blocks equal what tools/science_tables.py renders from them."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_documents_science_tables_match_the_committed_results():
    result = subprocess.run([sys.executable, str(ROOT / "tools" / "science_tables.py"),
                             "--check"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_each_study_block_is_present():
    """The blocks exist (a check over no blocks would pass whatever the results say)."""
    science = (ROOT / "docs" / "science.md").read_text()
    for name in ("verdicts-laptop", "forms-laptop", "headline-laptop", "check-laptop",
                 "margins-laptop", "verdicts-default", "forms-default", "headline-default",
                 "margins-default"):
        assert f"<!-- begin: {name} (tools/science_tables.py) -->" in science
    assert "<!-- begin: readme-summary (tools/science_tables.py) -->" in (
        ROOT / "README.md").read_text()
