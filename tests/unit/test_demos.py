"""savepoint.demos has Lightning's constructors and item shapes; WikiText2 reads a local file only."""

from __future__ import annotations

import pytest
import torch

from savepoint.demos import Transformer, WikiText2

TEXT = "the cat sat on the mat\n a dog ran after the cat \n" * 40


def test_wikitext2_items_match_lightning(tmp_path):
    from lightning.pytorch.demos import WikiText2 as LightningWikiText2

    (tmp_path / "wikitext-2.txt").write_text(TEXT)
    ours = WikiText2(data_dir=tmp_path, block_size=7, download=False)
    theirs = LightningWikiText2(data_dir=tmp_path, block_size=7, download=False)
    assert len(ours) == len(theirs) and ours.vocab_size == theirs.vocab_size
    for i in (0, 5, len(ours) - 1):
        assert all(torch.equal(a, b) for a, b in zip(ours[i], theirs[i]))


def test_wikitext2_missing_file_says_where_to_put_it(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"wikitext-2\.txt") as info:
        WikiText2(data_dir=tmp_path / "data")
    assert str(tmp_path / "data" / "wikitext-2.txt") in str(info.value)
    assert "never downloads" in str(info.value)


def test_transformer_output_matches_lightning_with_the_same_weights():
    from lightning.pytorch.demos import Transformer as LightningTransformer

    ours = Transformer(vocab_size=50, ninp=16, nhead=2, nhid=32, nlayers=1, dropout=0.0).eval()
    theirs = LightningTransformer(vocab_size=50, ninp=16, nhead=2, nhid=32, nlayers=1, dropout=0.0).eval()
    theirs.load_state_dict(ours.state_dict())
    x = torch.randint(0, 50, (3, 9))
    with torch.no_grad():
        out = ours(x, x)
        assert out.shape == (3 * 9, 50)
        assert torch.allclose(out, theirs(x, x))
