"""The README's tour runs as written."""

import re
from pathlib import Path

README = Path(__file__).parents[2] / "README.md"


def test_readme_tour_runs(capsys):
    text = README.read_text()
    block = re.search(r"## A short tour\n\n```python\n(.*?)```", text, re.S)
    assert block, "README lost its tour"
    exec(compile(block.group(1), "README.md", "exec"), {"__name__": "readme_tour"})
    out = capsys.readouterr().out.split()
    assert out[-1] == "60"
