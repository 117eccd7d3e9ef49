"""Progress bars: `ProgressBar` (the base), `RichProgressBar` (the default), `TQDMProgressBar` (extra)."""

from savepoint.callbacks.progress.progress_bar import ProgressBar
from savepoint.callbacks.progress.rich_progress import RichProgressBar, print_metrics
from savepoint.callbacks.progress.tqdm_progress import TQDMProgressBar

__all__ = ["ProgressBar", "RichProgressBar", "TQDMProgressBar", "print_metrics"]
