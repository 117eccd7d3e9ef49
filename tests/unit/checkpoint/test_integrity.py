"""Integrity checks of a checkpoint archive on load and in verify: CRCs, record sizes, pickle size limit."""

import io
import pickle
import struct
import tracemalloc
import zipfile
import zlib

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from savepoint.checkpoint import archive, integrity
from savepoint.checkpoint.errors import (
    CheckpointError,
    CorruptCheckpointError,
    OversizedCheckpointError,
)
from savepoint.checkpoint.verify import verify_checkpoint
from savepoint.plugins.io import TorchCheckpointIO
from savepoint.plugins.io.torch_io import load_file

# Files these tests damage on purpose are named "corrupt-*": the suite's weights-only check skips them.


def _save(path, checkpoint=None):
    checkpoint = checkpoint or {"state_dict": {"w": torch.arange(512.0), "b": torch.ones(3)}, "epoch": 0}
    TorchCheckpointIO().save_checkpoint(checkpoint, str(path))
    return path


def _record(path, suffix):
    with zipfile.ZipFile(path) as archive:
        return next(i for i in archive.infolist() if i.filename.endswith(suffix))


def _data_offset(path, info):
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        header = f.read(30)
    name_len, extra_len = struct.unpack_from("<HH", header, 26)
    return info.header_offset + 30 + name_len + extra_len


def _flip_bit(src, dst, suffix, byte=100, bit=0):
    data = bytearray(src.read_bytes())
    data[_data_offset(src, _record(src, suffix)) + byte] ^= 1 << bit
    dst.write_bytes(bytes(data))
    return dst


def _rewrite(src, dst, replace=(), deflate=()):
    """A copy of archive `src` with some records' bytes replaced (correct CRCs) or deflated."""
    replace = dict(replace)
    with zipfile.ZipFile(src) as old, zipfile.ZipFile(dst, "w") as new:
        for info in old.infolist():
            data = next((v for k, v in replace.items() if info.filename.endswith(k)), None)
            data = old.read(info) if data is None else data
            method = (
                zipfile.ZIP_DEFLATED
                if any(info.filename.endswith(k) for k in deflate)
                else zipfile.ZIP_STORED
            )
            new.writestr(zipfile.ZipInfo(info.filename), data, compress_type=method)
    return dst


def test_integrity_flipped_bit_in_a_weight_is_refused_naming_file_and_record(tmp_path):
    bad = _flip_bit(_save(tmp_path / "a.ckpt"), tmp_path / "corrupt-a.ckpt", "data/0")
    with pytest.raises(
        CorruptCheckpointError, match=r"corrupt-a\.ckpt.*record 'archive/data/0'.*CRC32"
    ) as info:
        load_file(str(bad))
    assert info.value.path == str(bad)


def test_integrity_opt_out_argument_loads_the_file_as_is(tmp_path):
    bad = _flip_bit(_save(tmp_path / "a.ckpt"), tmp_path / "corrupt-a.ckpt", "data/0")
    w = TorchCheckpointIO(verify_integrity=False).load_checkpoint(str(bad))["state_dict"]["w"]
    assert w[25] != 25.0 and torch.equal(w[:25], torch.arange(25.0))


def test_integrity_opt_out_environment_variable(tmp_path, monkeypatch):
    bad = _flip_bit(_save(tmp_path / "a.ckpt"), tmp_path / "corrupt-a.ckpt", "data/0")
    monkeypatch.setenv(integrity.VERIFY_ENV, "0")
    assert load_file(str(bad))["state_dict"]["w"].shape == (512,)
    with pytest.raises(CorruptCheckpointError, match="CRC32"):  # an explicit argument wins
        load_file(str(bad), verify_integrity=True)


def test_integrity_flipped_bit_in_the_pickle_is_refused(tmp_path):
    bad = _flip_bit(_save(tmp_path / "a.ckpt"), tmp_path / "corrupt-a.ckpt", "data.pkl", byte=20)
    with pytest.raises(CorruptCheckpointError, match=r"record 'archive/data.pkl'.*CRC32"):
        load_file(str(bad))


def test_integrity_verify_integrity_must_be_a_bool():
    with pytest.raises(TypeError, match="verify_integrity must be True, False or None, got 'no'"):
        TorchCheckpointIO(verify_integrity="no")


def test_integrity_short_record_is_refused_by_load_and_verify(tmp_path):
    # A 64-byte record whose pickle claims 2048 bytes (512 float32): the tail would come from the next record.
    bad = _rewrite(_save(tmp_path / "a.ckpt"), tmp_path / "corrupt-a.ckpt", replace={"data/0": bytes(64)})
    expected = r"corrupt-a\.ckpt.*storage record 'archive/data/0' holds 64 bytes but the pickle claims 2048"
    with pytest.raises(CorruptCheckpointError, match=expected):
        load_file(str(bad))
    with pytest.raises(CorruptCheckpointError, match=expected):
        load_file(str(bad), verify_integrity=False)  # not a CRC check: always on
    report = verify_checkpoint(bad)
    assert not report.ok and "holds 64 bytes but the pickle claims 2048" in report.problems[0]


def test_integrity_truncated_file_is_refused_naming_it(tmp_path):
    good = _save(tmp_path / "a.ckpt")
    bad = tmp_path / "corrupt-a.ckpt"
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CorruptCheckpointError, match=r"corrupt-a\.ckpt"):
        load_file(str(bad))


def _bomb(tmp_path, inflated: int):
    payload = pickle.dumps({"state_dict": {}, "pad": "a" * inflated}, protocol=2)
    return _rewrite(
        _save(tmp_path / "a.ckpt"), tmp_path / "corrupt-bomb.ckpt", {"data.pkl": payload}, {"data.pkl"}
    )


def test_integrity_pickle_bomb_is_refused_before_inflating(tmp_path, monkeypatch):
    bomb = _bomb(tmp_path, 16 << 20)
    assert bomb.stat().st_size < 100_000
    monkeypatch.setenv(integrity.MAX_PICKLE_ENV, str(1 << 20))
    tracemalloc.start()
    try:
        with pytest.raises(
            OversizedCheckpointError, match=r"corrupt-bomb\.ckpt.*'archive/data.pkl' inflates to 16777"
        ):
            load_file(str(bomb))
        report = verify_checkpoint(bomb)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert not report.ok and "inflates to" in report.problems[0]
    assert peak < 2 << 20, f"refusing a 16 MB pickle record held {peak} bytes"


def test_integrity_default_pickle_limit_refuses_a_bomb_past_64_mib(tmp_path):
    bomb = _bomb(tmp_path, 65 << 20)
    with pytest.raises(OversizedCheckpointError, match=r"over the limit of 67108864 bytes"):
        load_file(str(bomb))


def test_integrity_pickle_limit_is_configurable_and_generous_by_default(tmp_path):
    bomb = _bomb(tmp_path, 2 << 20)
    assert load_file(str(bomb))["pad"] == "a" * (2 << 20)  # 2 MB of pickle: far under the default
    with pytest.raises(OversizedCheckpointError, match="over the limit of 1000000 bytes"):
        TorchCheckpointIO(max_pickle_bytes=1_000_000).load_checkpoint(str(bomb))
    with pytest.raises(ValueError, match="max_pickle_bytes must be a positive number of bytes, got 0"):
        TorchCheckpointIO(max_pickle_bytes=0)


def test_verify_streams_records_without_holding_one_in_memory(tmp_path):
    path = _save(
        tmp_path / "big.ckpt", {"state_dict": {"w": torch.ones(8 << 20)}, "epoch": 0}
    )  # one 32 MB record
    tracemalloc.start()
    try:
        report = verify_checkpoint(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert report.ok, report.problems
    assert peak < 8 << 20, f"verify of a 32 MB record held {peak} bytes at once"


def test_integrity_zero_byte_file_is_refused_by_load_and_verify_alike(tmp_path):
    empty = tmp_path / "corrupt-empty.ckpt"
    empty.write_bytes(b"")
    with pytest.raises(CorruptCheckpointError, match=r"corrupt-empty\.ckpt' is empty \(0 bytes\)") as info:
        load_file(str(empty))
    for load in (True, False):
        report = verify_checkpoint(empty, load=load)
        assert not report.ok and report.problems == [str(info.value)]


def test_archive_crc32_matches_zlib():
    data = bytes(range(256)) * 1000
    assert archive.crc32(data) == zlib.crc32(data)
    assert archive.crc32(data[500:], archive.crc32(data[:500])) == zlib.crc32(data)


def test_integrity_without_the_accelerator_falls_back_to_zlib(tmp_path, monkeypatch):
    monkeypatch.setattr(archive, "_crc32", zlib.crc32)
    bad = _flip_bit(_save(tmp_path / "a.ckpt"), tmp_path / "corrupt-a.ckpt", "data/0")
    with pytest.raises(CorruptCheckpointError, match="CRC32"):
        load_file(str(bad))
    assert load_file(str(tmp_path / "a.ckpt"))["state_dict"]["w"].shape == (512,)


# -- property: every damaged file is refused with a typed error naming it, or loads exactly what was saved --

_SAVED = {
    "state_dict": {"w": torch.arange(96.0).reshape(8, 12), "b": torch.arange(5, dtype=torch.int64)},
    "optimizer_states": [{"state": {0: {"m": torch.linspace(0, 1, 7)}}, "param_groups": [{"lr": 0.1}]}],
    "epoch": 3,
}


class _Bytes(bytes):
    def __repr__(self) -> str:  # hypothesis prints the arguments of a failing example
        return f"<{len(self)} bytes of a saved checkpoint>"


@pytest.fixture(scope="module")
def saved_bytes(tmp_path_factory):
    path = tmp_path_factory.mktemp("prop") / "a.ckpt"
    TorchCheckpointIO().save_checkpoint(_SAVED, str(path))
    return _Bytes(path.read_bytes())


def _equal(a, b):
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return type(a) is type(b) and len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    return a == b


def _record_size_edit(data: bytes, which: int, delta: int) -> bytes:
    """Change one storage record's length (its CRC made right): a record shorter or longer than claimed."""
    src = io.BytesIO(data)
    out = io.BytesIO()
    with zipfile.ZipFile(src) as old, zipfile.ZipFile(out, "w") as new:
        storages = [i for i in old.infolist() if "/data/" in i.filename]
        target = storages[which % len(storages)].filename
        for info in old.infolist():
            body = old.read(info)
            if info.filename == target:
                body = body[:delta] if delta < 0 else body + bytes(delta)
            new.writestr(zipfile.ZipInfo(info.filename), body)
    return out.getvalue()


_damage = st.one_of(
    st.tuples(st.just("truncate"), st.floats(0.0, 0.999), st.just(0)),
    st.tuples(st.just("flip"), st.floats(0.0, 0.999), st.integers(0, 7)),
    st.tuples(st.just("resize"), st.integers(0, 10), st.sampled_from([-8, -4, -1, 1, 4, 64])),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(damage=_damage)
def test_integrity_damaged_file_is_refused_by_name_or_loads_exactly(tmp_path, saved_bytes, damage):
    kind, where, amount = damage
    data = bytearray(saved_bytes)
    if kind == "truncate":
        data = data[: int(where * len(data))]
    elif kind == "flip":
        data[int(where * len(data))] ^= 1 << amount
    else:
        data = bytearray(_record_size_edit(saved_bytes, int(where), amount))
    path = tmp_path / "corrupt-prop.ckpt"
    path.write_bytes(bytes(data))
    try:
        loaded = load_file(str(path))
    except CheckpointError as err:
        assert str(path) in str(err) and err.path == str(path)
        report = verify_checkpoint(path)
        assert not report.ok
        return
    assert _equal(_SAVED, loaded), f"{kind} at {where}: loaded different data without an error"
    assert verify_checkpoint(path).ok


def test_integrity_self_referencing_pickle_and_storage_less_tensors_load(tmp_path):
    looped = [1]
    looped.append(looped)
    path = _save(
        tmp_path / "odd.ckpt",
        {"state_dict": {"w": torch.ones(3)}, "loop": looped, "sparse": torch.eye(3).to_sparse(), "epoch": 0},
    )
    loaded = load_file(str(path), unused_keys=("sparse",))
    assert loaded["loop"][1] is loaded["loop"] and torch.equal(loaded["sparse"].to_dense(), torch.eye(3))
