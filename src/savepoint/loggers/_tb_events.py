"""Rewriting TensorBoard event files on resume: keep the records written up to a checkpoint."""

from __future__ import annotations

import os


def truncate_events_after(log_dir: str, wall_time: float, skip: str | None = None) -> None:
    """Drop, from every event file directly in `log_dir` but `skip`, the events written after `wall_time`.

    A file is rewritten beside itself and swapped in with ``os.replace`` (a crash leaves the old file or
    the new one); a file left with only its header is removed.
    """
    from tensorboard.backend.event_processing.event_file_loader import RawEventFileLoader
    from tensorboard.compat.proto import event_pb2
    from tensorboard.summary.writer.record_writer import RecordWriter

    if not os.path.isdir(log_dir):
        return
    for name in sorted(os.listdir(log_dir)):
        path = os.path.join(log_dir, name)
        if "tfevents" not in name or not os.path.isfile(path) or (skip and os.path.samefile(path, skip)):
            continue
        records = list(RawEventFileLoader(path).Load())
        kept = [r for r in records if event_pb2.Event.FromString(r).wall_time <= wall_time]
        if len(kept) == len(records):
            continue
        if not any(event_pb2.Event.FromString(r).HasField("summary") for r in kept):
            os.remove(path)
            continue
        tmp = os.path.join(log_dir, f".{name}.tmp")
        with open(tmp, "wb") as f:
            writer = RecordWriter(f)
            for record in kept:
                writer.write(record)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
