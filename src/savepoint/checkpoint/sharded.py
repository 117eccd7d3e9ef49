"""The sharded checkpoint layout: a folder in the ``torch.distributed.checkpoint`` (DCP) format.

Layout::

    <name>/                 one checkpoint
      meta.ckpt             everything but the sharded tensors (loops, callbacks, hparams...), written
                            by rank 0 with torch.save: loads with weights_only=True
      __<rank>_<n>.distcp   each rank's shards, written in parallel
      crc32.json            the CRC32 of every record of every shard file, written by the coordinator
                            just before the commit marker
      .metadata             written last, by the coordinator: the commit marker. A folder without it is
                            not a checkpoint.

This module owns the names and how DCP's flat keys map back to a checkpoint dict; reading and writing
the folder is the sharded IO's (`savepoint.plugins.io.sharded`).
"""

from __future__ import annotations

from typing import Any

META_FILE = "meta.ckpt"
COMMIT_FILE = ".metadata"
CRC_FILE = "crc32.json"
SHARDED_KEYS = ("state_dict", "optimizer_states")


def unflatten_into(meta: dict[str, Any], flat: dict[str, Any]) -> dict[str, Any]:
    """Put DCP's flat ``state_dict.<name>`` / ``optimizer_states.<i>.<...>`` tensors back into `meta`."""
    out = dict(meta)
    model: dict[str, Any] = {}
    optimizers: dict[int, dict[str, Any]] = {}
    for key, value in flat.items():
        if key.startswith("state_dict."):
            model[key[len("state_dict.") :]] = value
        elif key.startswith("optimizer_states."):
            rest = key[len("optimizer_states.") :]
            index, _, name = rest.partition(".")
            optimizers.setdefault(int(index), {})[name] = value
    out["state_dict"] = model
    if "optimizer_states" in meta:
        states = []
        for i, template in enumerate(meta["optimizer_states"]):
            states.append(_fill_optimizer(template, optimizers.get(i, {})))
        out["optimizer_states"] = states
    return out


def _fill_optimizer(template: dict[str, Any], tensors: dict[str, Any]) -> dict[str, Any]:
    """Optimizer state saved by parameter name: ``state.<param>.<key>`` tensors, param_groups in meta."""
    state: dict[str, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("state."):
            param, _, name = key[len("state.") :].rpartition(".")
            state.setdefault(param, {})[name] = value
    for param, values in (template.get("state_scalars") or {}).items():
        state.setdefault(param, {}).update(values)
    return {"state": state, "param_groups": template.get("param_groups", [])}
