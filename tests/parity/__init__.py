"""Parity with Lightning 2.6.6: the same scenario on both frameworks, compared as a user observes it.

Where each behaviour of issue 10 is checked (items 4, 5, 8 and 10 live with the write path and the
exception-time saves, in their own tests):

- 1  step saves rank on the validation that follows: test_model_checkpoint.py::*_step_save_*, *_deferred_*
- 2  max_steps inside an epoch still saves: test_model_checkpoint.py::*_max_steps_*
- 3  save_last without a top-k save: test_model_checkpoint.py::*_save_last_writes_last_*
- 6  NaN scores, no monitor: test_model_checkpoint.py::*_nan_score_*, *_without_monitor_*
- 7  the resumed-from file is kept: test_model_checkpoint.py::*_never_deletes_*
- 9  real annotations: test_model_checkpoint.py::*_signature_has_real_annotations
- 11 top-k reconciled with the folder: tests/integration/test_model_checkpoint_reconcile.py (savepoint only)
- 12 resume at the next epoch: test_resume.py::*_from_epoch_end_*
- 13 restore order, parameter-group mismatch: test_resume.py::*_parameter_group*
- 14 no loop state: test_resume.py::*_without_loop_state_*
- 15 sanity check RNG isolation: test_loop.py::test_sanity_check_*
- 16 metrics.csv steps: test_loop.py::test_metrics_csv_*
- 17 limit fractions rounding to 0: test_loop.py::test_limit_fraction_*
- 18 epoch-end metrics in the module's hook: test_loop.py::test_module_validation_epoch_end_*
- 19-22 load_from_checkpoint and hyperparameters: test_loading.py
- 23 savepoint.core, save/load_hparams YAML: test_loading.py::*_yaml_*, *_core_package_*
- 24 copies of modules and Trainers, validation_step = None: test_loop.py::test_trained_*, *_set_to_none_*
"""
