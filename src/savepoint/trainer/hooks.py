"""Hook dispatch: the module's hook first, then each callback's (checkpoint callbacks last). A mixin of `Trainer`."""

from __future__ import annotations

from typing import Any

from savepoint.callbacks._save_point import SavePoint, run_hooks
from savepoint.callbacks.callback import Callback
from savepoint.module import TrainingModule


def _overrides(obj: Any, base: type, name: str) -> bool:
    return getattr(type(obj), name, None) is not getattr(base, name, None)


class HookDispatch:
    """Mixed into `Trainer`. Only hooks a callback or the module overrides are called (cached per fit)."""

    _callbacks: list[Callback]
    _model: TrainingModule | None
    _hook_cache: dict[str, tuple[list[Callback], bool]]
    _save_point: SavePoint | None = None  # open while a round of callback hooks runs

    # -- hook dispatch ---------------------------------------------------------------------------------------

    def _hook_targets(self, name: str) -> tuple[list[Callback], bool]:
        cached = self._hook_cache.get(name)
        if cached is None:
            cbs = [cb for cb in self._callbacks if _overrides(cb, Callback, name)]
            module_has = self._model is not None and _overrides(self._model, TrainingModule, name)
            cached = self._hook_cache[name] = (cbs, module_has)
        return cached

    def _call_module(self, name: str, *args: Any) -> Any:
        _, module_has = self._hook_targets(name)
        if module_has:
            return self._run_module(name, getattr(self._model, name), *args)
        return None

    def _call_callbacks(self, name: str, *args: Any) -> None:
        """Each callback's hook, in one save point: the files the checkpoint callbacks plan in this round
        are written once, after the last of them ran (``callbacks/_save_point.py``)."""
        cbs, _ = self._hook_targets(name)
        if cbs:
            run_hooks(self, cbs, name, args)  # type: ignore[arg-type]

    def _call(self, name: str, *args: Any) -> Any:
        """The module's hook, then each callback's (checkpoint callbacks last)."""
        result = self._call_module(name, *args)
        self._call_callbacks(name, *args)
        return result

    def _run_module(self, name: str, fn: Any, *args: Any) -> Any:
        module = self._model
        previous = module._current_fx  # type: ignore[union-attr]
        module._current_fx = name  # type: ignore[union-attr]
        try:
            return fn(*args)
        finally:
            module._current_fx = previous  # type: ignore[union-attr]
