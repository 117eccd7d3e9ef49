"""A flipped bit in a checkpoint is refused by every load of an explicit path, not only by ckpt_path="last"."""

import struct
import zipfile

import pytest
import torch

import savepoint as sp
from helpers import TinyModel, loaders, quiet_trainer
from savepoint.checkpoint import integrity


class AdamModel(TinyModel):
    """Adam keeps tensors in the optimizer state (SGD without momentum keeps none)."""

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-3)


def _trained(tmp_path):
    train, val = loaders()
    trainer = quiet_trainer(max_epochs=1, enable_checkpointing=False)
    trainer.fit(AdamModel(), train, val)
    path = tmp_path / "good.ckpt"
    trainer.save_checkpoint(path)
    return path


def _flip_in(path, top_key, out):
    """Flip one bit in the record of a tensor under checkpoint[top_key]; returns the damaged copy and record."""
    with zipfile.ZipFile(path) as archive:
        infos = {i.filename: i for i in archive.infolist()}
        pkl = next(name for name in infos if name.endswith("data.pkl"))
        claims = integrity.storage_claims(archive.read(pkl), str(path))
    elsewhere = set().union(*(v for k, v in claims.keys_under.items() if k != top_key))
    key = sorted(claims.keys_under[top_key] - elsewhere)[0]
    info = infos[pkl[: -len("data.pkl")] + "data/" + key]
    data = bytearray(path.read_bytes())
    name_len, extra_len = struct.unpack_from("<HH", data, info.header_offset + 26)
    data[info.header_offset + 30 + name_len + extra_len] ^= 0x10
    out.write_bytes(bytes(data))
    return out, info.filename


def test_load_from_checkpoint_refuses_a_flipped_bit_in_a_weight(tmp_path):
    bad, record = _flip_in(_trained(tmp_path), "state_dict", tmp_path / "corrupt-w.ckpt")
    with pytest.raises(sp.CorruptCheckpointError, match=rf"corrupt-w\.ckpt'.*record {record!r}.*CRC32"):
        AdamModel.load_from_checkpoint(bad)


def test_load_from_checkpoint_opt_out_loads_the_damaged_weights(tmp_path):
    good = _trained(tmp_path)
    bad, _ = _flip_in(good, "state_dict", tmp_path / "corrupt-w.ckpt")
    model = AdamModel.load_from_checkpoint(bad, verify_integrity=False)
    reference = AdamModel.load_from_checkpoint(good)
    differing = [k for k, v in model.state_dict().items() if not torch.equal(v, reference.state_dict()[k])]
    assert len(differing) == 1


def test_fit_ckpt_path_refuses_a_flipped_bit_in_a_weight(tmp_path):
    bad, record = _flip_in(_trained(tmp_path), "state_dict", tmp_path / "corrupt-w.ckpt")
    train, val = loaders()
    model = AdamModel()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(sp.CorruptCheckpointError, match=rf"corrupt-w\.ckpt'.*record {record!r}"):
        quiet_trainer(max_epochs=2, enable_checkpointing=False).fit(model, train, val, ckpt_path=bad)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_fit_ckpt_path_refuses_a_flipped_bit_in_the_optimizer_state(tmp_path):
    bad, record = _flip_in(_trained(tmp_path), "optimizer_states", tmp_path / "corrupt-o.ckpt")
    train, val = loaders()
    with pytest.raises(sp.CorruptCheckpointError, match=rf"record {record!r}"):
        quiet_trainer(max_epochs=2, enable_checkpointing=False).fit(AdamModel(), train, val, ckpt_path=bad)


def test_fit_ckpt_path_opt_out_through_the_checkpoint_io(tmp_path):
    bad, _ = _flip_in(_trained(tmp_path), "state_dict", tmp_path / "corrupt-w.ckpt")
    train, val = loaders()
    trainer = quiet_trainer(
        max_epochs=2, enable_checkpointing=False, plugins=[sp.TorchCheckpointIO(verify_integrity=False)]
    )
    trainer.fit(AdamModel(), train, val, ckpt_path=bad)
    assert trainer.current_epoch == 2


def test_load_from_checkpoint_does_not_read_the_optimizer_state_it_does_not_use(tmp_path):
    # Documented scope: load_from_checkpoint checks the CRCs of everything but optimizer_states, which it
    # never reads (two thirds of an Adam checkpoint); fit(ckpt_path=) and verify check every record.
    bad, _ = _flip_in(_trained(tmp_path), "optimizer_states", tmp_path / "corrupt-o.ckpt")
    assert isinstance(AdamModel.load_from_checkpoint(bad), AdamModel)
    assert not sp.verify(bad).ok


@pytest.mark.parametrize(
    "edit",
    [{"format_version": -1}, {"format_version": "abc"}, {"state_dict": [1, 2]}, {"loops": {"fit_loop": [0]}}],
    ids=["format-minus-one", "format-abc", "state-dict-list", "fit-loop-list"],
)
def test_fit_ckpt_path_refuses_what_verify_fails_with_the_same_reason(tmp_path, edit):
    checkpoint = torch.load(_trained(tmp_path), weights_only=True)
    bad = tmp_path / "corrupt-edited.ckpt"
    torch.save({**checkpoint, **edit}, bad)
    report = sp.verify(bad)
    assert not report.ok
    train, val = loaders()
    with pytest.raises(sp.CheckpointError) as info:
        quiet_trainer(max_epochs=2, enable_checkpointing=False).fit(AdamModel(), train, val, ckpt_path=bad)
    assert report.problems == [str(info.value)] and info.value.path == str(bad)
