"""`FSDPStrategy`: FSDP2 (``torch.distributed.fsdp.fully_shard``) over a 1-D device mesh.

Checkpoints, ``state_dict_type="sharded"`` (default): rank 0 first hands everything but the sharded
tensors to ``CheckpointIO.save_sharded_meta`` (``meta.ckpt``), then every rank writes its own shards in
parallel through ``CheckpointIO.save_sharded`` (``torch.distributed.checkpoint``), whose ``.metadata``
comes last as the commit marker. Loading (``is_sharded_checkpoint``, ``load_sharded_meta``,
``load_sharded``) reshards to any world size. The strategy never touches the folder itself. ``state_dict_type="full"``: the full state is gathered to rank 0
and written as one ``.ckpt`` file, like DDP.

Which submodules are sharded: ``shard_modules`` (a set of module classes, or a callable
``(name, module) -> bool``); the root module is always sharded last. ``training_step`` should run the
model through sharded submodules or ``self(...)`` so FSDP's hooks gather the parameters.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from savepoint.checkpoint import format as fmt
from savepoint.checkpoint.errors import CheckpointWriteError
from savepoint.checkpoint.sharded import COMMIT_FILE, SHARDED_KEYS
from savepoint.plugins.io.checkpoint_io import CheckpointIO
from savepoint.strategies.ddp import DDPStrategy

if TYPE_CHECKING:
    from savepoint.trainer.trainer import Trainer

ShardPolicy = set[type[nn.Module]] | Callable[[str, nn.Module], bool] | None


class FSDPStrategy(DDPStrategy):
    strategy_name = "fsdp"

    def __init__(
        self,
        accelerator: str | None = None,
        checkpoint_io: CheckpointIO | None = None,
        state_dict_type: str = "sharded",
        shard_modules: ShardPolicy = None,
        reshard_after_forward: bool = True,
        process_group_backend: str | None = None,
        timeout: timedelta = timedelta(minutes=30),
    ) -> None:
        super().__init__(
            accelerator=accelerator,
            checkpoint_io=checkpoint_io,
            process_group_backend=process_group_backend,
            timeout=timeout,
        )
        if state_dict_type not in ("sharded", "full"):
            raise ValueError(
                f"FSDPStrategy(state_dict_type={state_dict_type!r}) must be 'sharded' or 'full'."
            )
        self.state_dict_type = state_dict_type
        self.shard_modules = shard_modules
        self.reshard_after_forward = reshard_after_forward
        self._loaded_from_sharded: str | None = None

    # -- set-up ----------------------------------------------------------------------------------------------

    def _wants_shard(self, name: str, module: nn.Module) -> bool:
        policy = self.shard_modules
        if policy is None:
            return False
        if callable(policy) and not isinstance(policy, set | frozenset | list | tuple):
            return bool(policy(name, module))
        return isinstance(module, tuple(policy))

    def setup(self, trainer: Trainer) -> None:
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        self.trainer = trainer
        model = self._model
        assert model is not None
        if self.state_dict_type == "sharded" and not self.checkpoint_io.supports_sharded:
            raise TypeError(
                f"FSDPStrategy(state_dict_type='sharded') needs a CheckpointIO that writes sharded checkpoints; "
                f"{type(self.checkpoint_io).__name__} does not (supports_sharded is False). Implement "
                f"save_sharded/load_sharded in it, or use FSDPStrategy(state_dict_type='full')."
            )
        model.configure_model()
        model.to(self.root_device)
        mesh = init_device_mesh(self.root_device.type, (self.world_size,))
        for name, sub in list(model.named_modules()):
            if sub is not model and self._wants_shard(name, sub):
                fully_shard(sub, mesh=mesh, reshard_after_forward=self.reshard_after_forward)
        fully_shard(model, mesh=mesh, reshard_after_forward=self.reshard_after_forward)
        self._wrapped = None

    def training_step(self, *args: Any) -> Any:
        assert self._model is not None
        return self._model.training_step(*args)

    # -- state in and out ---------------------------------------------------------------------------------------

    def _options(self, full: bool) -> Any:
        from torch.distributed.checkpoint.state_dict import StateDictOptions

        return StateDictOptions(full_state_dict=full, cpu_offload=full)

    def model_state_dict(self) -> dict[str, Any]:
        from torch.distributed.checkpoint.state_dict import get_model_state_dict

        return get_model_state_dict(self._model, options=self._options(self.state_dict_type == "full"))

    def optimizer_state(self, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
        from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

        return get_optimizer_state_dict(
            self._model, optimizer, options=self._options(self.state_dict_type == "full")
        )

    def load_model_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True) -> None:
        from torch.distributed.checkpoint.state_dict import get_model_state_dict, set_model_state_dict

        if self._loaded_from_sharded is not None:
            target = {"state_dict": get_model_state_dict(self._model, options=self._options(False))}
            self.checkpoint_io.load_sharded(target, self._loaded_from_sharded)
            set_model_state_dict(self._model, target["state_dict"], options=self._options(False))
            return
        set_model_state_dict(self._model, dict(state_dict), options=self._options(True))

    def load_optimizer_state_dict(self, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
        from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict, set_optimizer_state_dict

        if self._loaded_from_sharded is not None:
            index = self.trainer.optimizers.index(optimizer) if self.trainer is not None else 0
            template = get_optimizer_state_dict(self._model, optimizer, options=self._options(False))
            tensors = _tensor_part(template)
            target = {"optimizer_states": {str(index): tensors}}
            self.checkpoint_io.load_sharded(target, self._loaded_from_sharded)
            merged = _merge(
                template, target["optimizer_states"][str(index)], state.get("state_scalars") or {}
            )
            merged["param_groups"] = state.get("param_groups", merged.get("param_groups"))
            set_optimizer_state_dict(self._model, optimizer, merged, options=self._options(False))
            return
        set_optimizer_state_dict(self._model, optimizer, state, options=self._options(True))

    # -- storage ---------------------------------------------------------------------------------------------------

    def load_checkpoint(self, checkpoint_path: str, map_location: Any | None = None) -> dict[str, Any]:
        if self.checkpoint_io.is_sharded_checkpoint(checkpoint_path):
            self._loaded_from_sharded = checkpoint_path
            meta = self.checkpoint_io.load_sharded_meta(checkpoint_path)
            meta.setdefault(fmt.STATE_DICT, {})
            return meta
        self._loaded_from_sharded = None
        return super().load_checkpoint(checkpoint_path, map_location)

    @property
    def supports_link(self) -> bool:
        """Sharded checkpoints are folders: each save point writes its own (no second names)."""
        return self.state_dict_type == "full" and self.checkpoint_io.supports_link

    def save_checkpoint(
        self, checkpoint: dict[str, Any], filepath: str, storage_options: Any | None = None
    ) -> None:
        if self.state_dict_type == "full":
            super().save_checkpoint(checkpoint, filepath, storage_options)
            return
        path = filepath  # a folder at the name ModelCheckpoint reports, so best/last paths point at it
        meta = {k: v for k, v in checkpoint.items() if k not in SHARDED_KEYS}
        meta[fmt.STATE_DICT] = {}
        if fmt.OPTIMIZER_STATES in checkpoint:
            meta[fmt.OPTIMIZER_STATES] = [
                {"param_groups": s.get("param_groups", []), "state_scalars": _scalar_part(s)}
                for s in checkpoint[fmt.OPTIMIZER_STATES]
            ]
        sharded = {"state_dict": checkpoint[fmt.STATE_DICT]}
        if fmt.OPTIMIZER_STATES in checkpoint:
            sharded["optimizer_states"] = {
                str(i): _tensor_part(s) for i, s in enumerate(checkpoint[fmt.OPTIMIZER_STATES])
            }
        error = None
        if self.is_global_zero:
            try:
                # The folder loses its old commit marker first: until the new one, it is not a checkpoint.
                self.checkpoint_io.save_sharded_meta(meta, path)
            except Exception as err:
                error = f"{type(err).__name__}: {err}"
        error = self.broadcast(error)
        if error is not None:
            raise CheckpointWriteError(f"saving sharded checkpoint {path!r} failed on rank 0: {error}", path)
        from torch.distributed.checkpoint.api import CheckpointException

        try:
            self.checkpoint_io.save_sharded(sharded, path, process_group=None)
        except CheckpointException as err:
            # DCP gathered the failure from the failing rank(s) and raised it on every rank.
            failures = "; ".join(
                f"rank {r}: {type(e).__name__}: {e}" for r, e in sorted(err.failures.items())
            )
            raise CheckpointWriteError(
                f"saving sharded checkpoint {path!r} failed on {failures}; it has no {COMMIT_FILE} and is not a "
                f"checkpoint.",
                path,
            ) from err


def _tensor_part(optimizer_state: dict[str, Any]) -> dict[str, Any]:
    """``state.<param>.<key>`` tensors of an FQN-keyed optimizer state dict."""
    out: dict[str, Any] = {}
    for param, values in optimizer_state.get("state", {}).items():
        for key, value in values.items():
            if isinstance(value, torch.Tensor):
                out[f"state.{param}.{key}"] = value
    return out


def _scalar_part(optimizer_state: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per-parameter optimizer state that is not a tensor (kept in meta.ckpt, not in the shards)."""
    out: dict[str, dict[str, Any]] = {}
    for param, values in optimizer_state.get("state", {}).items():
        scalars = {k: v for k, v in values.items() if not isinstance(v, torch.Tensor)}
        if scalars:
            out[param] = scalars
    return out


def _merge(
    template: dict[str, Any], tensors: dict[str, Any], scalars: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    state = {p: dict(v) for p, v in template.get("state", {}).items()}
    for param, values in scalars.items():
        state.setdefault(param, {}).update(values)
    for key, value in tensors.items():
        param, _, name = key[len("state.") :].rpartition(".")
        state.setdefault(param, {})[name] = value
    return {"state": state, "param_groups": template.get("param_groups", [])}
