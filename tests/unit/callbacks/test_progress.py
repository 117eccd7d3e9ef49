"""Progress bars' plain lines and optional package."""

import io
import sys

import pytest

from savepoint.callbacks.progress.progress_bar import PlainLines


def test_plain_lines_format_progress_rate_and_metrics():
    out = io.StringIO()
    lines = PlainLines(out, interval_s=0)
    lines.start(total=20)
    lines.line("Epoch 0/4", 20, {"loss": 0.123456, "v_num": 3})
    assert out.getvalue().startswith("Epoch 0/4: 100% 20/20 [00:00, ")
    assert out.getvalue().endswith("it/s] loss=0.1235 v_num=3\n")


def test_plain_lines_due_once_per_tenth_and_never_at_the_end():
    lines = PlainLines(io.StringIO(), interval_s=0)
    lines.start(total=20)
    assert [n for n in range(1, 21) if lines.due(n)] == [2, 4, 6, 8, 10, 12, 14, 16, 18]


def test_plain_lines_not_due_before_the_interval():
    lines = PlainLines(io.StringIO(), interval_s=3600)
    lines.start(total=20)
    assert not any(lines.due(n) for n in range(1, 21))


def test_tqdm_progress_bar_without_the_package_names_the_extra(monkeypatch):
    from savepoint.callbacks import TQDMProgressBar

    monkeypatch.setitem(sys.modules, "tqdm", None)
    with pytest.raises(ImportError, match=r"savepoint\[tqdm\]"):
        TQDMProgressBar()
