import math
from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from savepoint.callbacks import checkpoint_policy as policy
from savepoint.callbacks.checkpoint_policy import Candidate


def _validate(**overrides):
    args = dict(
        save_top_k=1,
        mode="min",
        monitor=None,
        every_n_train_steps=None,
        every_n_epochs=None,
        train_time_interval=None,
        save_last=None,
    )
    args.update(overrides)
    policy.validate_config(**args)


@pytest.mark.parametrize(
    ("overrides", "names"),
    [
        ({"every_n_train_steps": 2, "every_n_epochs": 1}, ("every_n_train_steps", "every_n_epochs")),
        (
            {"every_n_train_steps": 2, "train_time_interval": timedelta(seconds=1)},
            ("every_n_train_steps", "train_time_interval"),
        ),
        ({"every_n_epochs": -1}, ("every_n_epochs",)),
        ({"every_n_train_steps": -3}, ("every_n_train_steps",)),
        ({"save_top_k": -2}, ("save_top_k",)),
        ({"mode": "maximum"}, ("mode",)),
        ({"save_top_k": 3}, ("save_top_k", "monitor")),
        ({"save_last": "yes"}, ("save_last",)),
    ],
)
def test_policy_validate_config_rejects_bad_combinations_naming_the_arguments(overrides, names):
    with pytest.raises(ValueError) as info:
        _validate(**overrides)
    for name in names:
        assert name in str(info.value)


def test_policy_validate_config_accepts_good_combinations():
    _validate(save_top_k=3, monitor="val_loss", every_n_train_steps=10)
    _validate(save_top_k=-1, every_n_epochs=0, train_time_interval=timedelta(minutes=5))


def test_policy_format_name_matches_the_spec_example():
    name = policy.format_checkpoint_name(
        "sample-mnist-{epoch:02d}-{val_loss:.2f}", {"epoch": 2, "val_loss": 0.3215}
    )
    assert name == "sample-mnist-epoch=02-val_loss=0.32.ckpt"


def test_policy_format_name_default_template():
    assert policy.format_checkpoint_name(None, {"epoch": 3, "step": 40}) == "epoch=3-step=40.ckpt"


def test_policy_format_name_without_metric_names():
    name = policy.format_checkpoint_name(
        "{epoch:02d}-{val_loss:.1f}", {"epoch": 1, "val_loss": 2.25}, auto_insert_metric_name=False
    )
    assert name == "01-2.2.ckpt"


def test_policy_format_name_slash_in_metric_never_makes_folders():
    name = policy.format_checkpoint_name("{val/loss:.2f}", {"val/loss": 0.5})
    assert "/" not in name and name == "val_loss=0.50.ckpt"


def test_policy_format_name_prefix_and_version():
    assert (
        policy.format_checkpoint_name("{epoch}", {"epoch": 1}, prefix="run", version=2)
        == "run-epoch=1-v2.ckpt"
    )


def test_policy_versioned_name_skips_taken_names():
    taken = {"a.ckpt", "a-v1.ckpt"}
    make = lambda v: "a.ckpt" if v is None else f"a-v{v}.ckpt"  # noqa: E731
    assert policy.versioned_name(make, taken.__contains__, 1) == "a-v2.ckpt"
    assert policy.versioned_name(make, taken.__contains__, 1, reusable="a.ckpt") == "a.ckpt"


def test_policy_due_after_batch_steps_and_time():
    assert policy.due_after_batch(global_step=4, last_step_saved=2, every_n_train_steps=2)
    assert not policy.due_after_batch(global_step=4, last_step_saved=4, every_n_train_steps=2)
    assert not policy.due_after_batch(global_step=3, last_step_saved=2, every_n_train_steps=2)
    interval = timedelta(seconds=10)
    assert policy.due_after_batch(
        global_step=3,
        last_step_saved=1,
        every_n_train_steps=0,
        elapsed_s=12.0,
        last_time_saved_s=1.0,
        train_time_interval=interval,
    )
    assert not policy.due_after_batch(
        global_step=3,
        last_step_saved=1,
        every_n_train_steps=0,
        elapsed_s=5.0,
        last_time_saved_s=1.0,
        train_time_interval=interval,
    )


def test_policy_due_after_epoch_every_n():
    assert policy.due_after_epoch(epoch=1, every_n_epochs=2, global_step=5, last_step_saved=0)
    assert not policy.due_after_epoch(epoch=0, every_n_epochs=2, global_step=5, last_step_saved=0)
    assert not policy.due_after_epoch(epoch=1, every_n_epochs=0, global_step=5, last_step_saved=0)


def test_policy_top_k_ties_keep_the_earlier_file():
    current = [Candidate("a", 1.0, 0)]
    update = policy.top_k_update(current, Candidate("b", 1.0, 1), 1, "min")
    assert not update.keep_new and [c.path for c in update.kept] == ["a"]


def test_policy_top_k_nan_never_displaces_a_number():
    current = [Candidate("a", 5.0, 0)]
    assert not policy.top_k_update(current, Candidate("b", math.nan, 1), 1, "max").keep_new
    update = policy.top_k_update([Candidate("n", math.nan, 0)], Candidate("b", 9.0, 1), 1, "min")
    assert update.keep_new and [c.path for c in update.evicted] == ["n"]


def test_policy_top_k_zero_keeps_nothing():
    assert not policy.top_k_update([], Candidate("a", 1.0, 0), 0, "min").keep_new


scores = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, width=32), st.sampled_from([0.0, 1.0, 1.0, 2.0])
)


@given(
    values=st.lists(scores, max_size=25),
    k=st.integers(min_value=-1, max_value=5),
    mode=st.sampled_from(["min", "max"]),
)
def test_policy_top_k_invariant_kept_files_are_exactly_the_k_best(values, k, mode):
    kept: list[Candidate] = []
    for i, v in enumerate(values):
        update = policy.top_k_update(kept, Candidate(f"f{i}", v, i), k, mode)
        if update.keep_new:
            kept = list(update.kept)
        # never more than k files
        assert k < 0 or len(kept) <= k
    everything = [Candidate(f"f{i}", v, i) for i, v in enumerate(values)]
    finite = [c for c in everything if math.isfinite(c.score)]
    sign = 1 if mode == "min" else -1
    # expected: the k best by (finite first, score, earlier first)
    expected = sorted(
        everything,
        key=lambda c: (not math.isfinite(c.score), sign * c.score if math.isfinite(c.score) else 0, c.order),
    )
    expected = expected if k < 0 else expected[:k]
    assert {c.path for c in kept} == {c.path for c in expected}
    # a non-finite value is never kept while a finite one was dropped
    if any(not math.isfinite(c.score) for c in kept):
        assert all(c.path in {k_.path for k_ in kept} for c in finite)


def test_strays_to_remove_takes_files_ranked_below_a_full_top_k():
    kept = [Candidate("b", 0.2, 1), Candidate("c", 0.3, 2)]
    strays = [Candidate("a", 0.5, -1), Candidate("d", 0.1, -1), Candidate("e", 0.3, -1)]
    # a ranks below both kept files: evicted before the crash. d would rank first and e ties: both stay.
    assert policy.strays_to_remove(strays, kept, 2, "min") == ["a"]


def test_strays_to_remove_keeps_everything_when_the_top_k_has_room_or_keeps_all():
    kept = [Candidate("b", 0.2, 1)]
    strays = [Candidate("a", 0.5, -1)]
    assert policy.strays_to_remove(strays, kept, 2, "min") == []
    assert policy.strays_to_remove(strays, kept, -1, "min") == []


def test_strays_to_remove_ranks_nan_below_finite_scores():
    kept = [Candidate("b", 0.2, 1)]
    assert policy.strays_to_remove([Candidate("a", math.nan, -1)], kept, 1, "max") == ["a"]
