"""RNG state capture and restore, in a form ``torch.load(weights_only=True)`` accepts."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch


def capture_rng() -> dict[str, Any]:
    """torch CPU, every CUDA device, numpy and Python ``random`` states, as tensors, ints and lists."""
    np_state = np.random.get_state()
    py_version, py_internal, py_gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": str(np_state[0]),
            "keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": {"version": int(py_version), "internal": list(py_internal), "gauss_next": py_gauss},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = [t.cpu() for t in torch.cuda.get_rng_state_all()]
    return state


def restore_rng(state: dict[str, Any]) -> None:
    # A checkpoint resumed on CUDA is loaded with map_location=<the GPU>: its RNG states arrive as CUDA
    # tensors, and every setter below takes CPU tensors (numpy arrays, ByteTensors) only.
    if "torch" in state:
        torch.set_rng_state(_cpu(state["torch"]))
    if "numpy" in state:
        s = state["numpy"]
        keys = (
            s["keys"].cpu().numpy().astype(np.uint32)
            if isinstance(s["keys"], torch.Tensor)
            else np.asarray(s["keys"], np.uint32)
        )
        np.random.set_state((s["kind"], keys, s["pos"], s["has_gauss"], s["cached_gaussian"]))
    if "python" in state:
        s = state["python"]
        random.setstate((s["version"], tuple(s["internal"]), s["gauss_next"]))
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = [_cpu(s) for s in state["cuda"]]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)
        else:
            for i, s in enumerate(cuda_states[: torch.cuda.device_count()]):
                torch.cuda.set_rng_state(s, i)


def _cpu(value: Any) -> Any:
    return value.cpu() if isinstance(value, torch.Tensor) else value
