"""`ModelSummary`: a table of the module's layers when fit starts (on by default, as in Lightning;
``Trainer(enable_model_summary=False)`` turns it off)::

      | Name | Type        | Params | Mode  | FLOPs | In sizes | Out sizes
    ----------------------------------------------------------------------------
    0 | net  | Sequential  | 178    | train | 1.3 K | [4, 8]   | [4, 2]
    ...
    182       Trainable params

The FLOPs (0 without an example) and In/Out sizes come from the module's ``example_input_array``: one
forward pass on it, in eval mode and without gradients, is counted and recorded. The text is the same,
to the space, as Lightning's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from savepoint.callbacks.callback import Callback

if TYPE_CHECKING:
    from savepoint.module import TrainingModule
    from savepoint.trainer.trainer import Trainer


def get_human_readable_count(number: float) -> str:
    """``1234`` -> ``"1.2 K"`` (Lightning's format: K, M, B, T)."""
    labels = [" ", "K", "M", "B", "T"]
    n = 0
    while abs(number) >= 1000 and n < len(labels) - 1:
        number /= 1000
        n += 1
    return f"{int(number):,d}" if n == 0 else f"{number:,.1f} {labels[n]}"


def _shape(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return list(value.shape)
    if isinstance(value, list | tuple):
        return [_shape(v) for v in value]
    return "?"


@dataclass
class LayerSummary:
    name: str
    type: str
    params: int
    training: bool
    flops: int | None = None
    in_size: Any = None
    out_size: Any = None


class Summary:
    """The rows and totals of a module's summary down to `max_depth` (-1: every level)."""

    def __init__(self, model: nn.Module, max_depth: int = 1) -> None:
        self.model = model
        self.max_depth = max_depth
        named = [(n, m) for n, m in model.named_modules() if n]
        if max_depth >= 0:
            named = [(n, m) for n, m in named if n.count(".") < max_depth]
        self.layers = [
            LayerSummary(n, type(m).__name__, sum(p.numel() for p in m.parameters()), m.training)
            for n, m in named
        ]
        params = list(model.parameters())
        self.trainable_parameters = sum(p.numel() for p in params if p.requires_grad)
        self.total_parameters = sum(p.numel() for p in params)
        self.model_size_mb = sum(p.numel() * p.element_size() for p in params) / 1e6
        submodules = [m for n, m in model.named_modules() if n]
        self.training_modules = sum(m.training for m in submodules)
        self.total_modules = len(submodules)
        self.total_flops = 0
        self.has_example = False
        example = getattr(model, "example_input_array", None)
        if example is not None:
            self.has_example = True
            self._forward_example(dict(named), example)

    def _forward_example(self, modules: dict[str, nn.Module], example: Any) -> None:
        from torch.utils.flop_counter import FlopCounterMode

        rows = {row.name: row for row in self.layers}
        hooks = []

        def record(name: str) -> Any:
            def hook(module: nn.Module, args: Any, output: Any) -> None:
                rows[name].in_size = _shape(args[0] if len(args) == 1 else list(args))
                rows[name].out_size = _shape(output)

            return hook

        for name, module in modules.items():
            hooks.append(module.register_forward_hook(record(name)))
        modes = {m: m.training for m in self.model.modules()}  # restored one by one: a mix survives
        self.model.eval()
        counter = FlopCounterMode(display=False)
        try:
            with torch.no_grad(), counter:
                if isinstance(example, tuple | list):
                    self.model(*example)
                elif isinstance(example, dict):
                    self.model(**example)
                else:
                    self.model(example)
        finally:
            for h in hooks:
                h.remove()
            for module, training in modes.items():
                module.training = training
        by_module = counter.get_flop_counts()
        self.total_flops = int(sum(by_module.get("Global", {}).values()))
        root = type(self.model).__name__
        for row in self.layers:
            row.flops = int(sum(by_module.get(f"{root}.{row.name}", {}).values()))

    def table(self) -> tuple[list[str], list[list[str]]]:
        header = ["", "Name", "Type", "Params", "Mode", "FLOPs"]
        with_example = self.has_example
        if with_example:
            header += ["In sizes", "Out sizes"]
        rows = []
        for i, row in enumerate(self.layers):
            cells = [str(i), row.name, row.type, get_human_readable_count(row.params)]
            cells += ["train" if row.training else "eval", get_human_readable_count(row.flops or 0)]
            if with_example:
                cells += [str(row.in_size), str(row.out_size)]
            rows.append(cells)
        return header, rows

    def totals(self) -> list[tuple[str, str]]:
        out = [
            (get_human_readable_count(self.trainable_parameters), "Trainable params"),
            (
                get_human_readable_count(self.total_parameters - self.trainable_parameters),
                "Non-trainable params",
            ),
            (get_human_readable_count(self.total_parameters), "Total params"),
            (f"{self.model_size_mb:,.3f}", "Total estimated model params size (MB)"),
            (str(self.training_modules), "Modules in train mode"),
            (str(self.total_modules - self.training_modules), "Modules in eval mode"),
        ]
        out.append((get_human_readable_count(self.total_flops), "Total Flops"))
        return out

    def __str__(self) -> str:
        header, rows = self.table()
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
        line = lambda cells: " | ".join(c.ljust(w) for c, w in zip(cells, widths))  # noqa: E731
        text = [line(header), "-" * (sum(widths) + 3 * (len(widths) + 1))]  # Lightning's widths, to the space
        text += [line(r) for r in rows]
        text.append(text[1])
        text += [f"{value:<10}{label}" for value, label in self.totals()]
        return "\n".join(text)


def summarize(model: nn.Module, max_depth: int = 1) -> Summary:
    """The summary `ModelSummary` prints (``str(summarize(model))``)."""
    return Summary(model, max_depth)


class ModelSummary(Callback):
    """Prints the module's summary at fit start, on global rank 0. ``max_depth``: how many levels of
    submodules to list (-1: all, 0: none but the totals)."""

    def __init__(self, max_depth: int = 1, **summarize_kwargs: Any) -> None:
        if not isinstance(max_depth, int) or max_depth < -1:
            raise ValueError(f"ModelSummary(max_depth={max_depth!r}) must be an int >= -1.")
        self._max_depth = max_depth
        self._summarize_kwargs = summarize_kwargs

    def on_fit_start(self, trainer: Trainer, pl_module: TrainingModule) -> None:
        if self._max_depth == 0 or not trainer.is_global_zero:
            return
        summary = summarize(pl_module, self._max_depth)
        self.summarize(summary, **self._summarize_kwargs)

    def summarize(self, summary: Summary, **kwargs: Any) -> None:
        print(summary)
