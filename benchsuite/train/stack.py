"""Stacked seeds: K runs of one architecture held as one model whose every tensor is the K runs' tensors
concatenated along dim 0 (grouped convolutions, see benchsuite/models/cifar_resnet.py).

Model and optimizer states convert both ways by that rule, so each run's checkpoint stays in the ordinary
format: a stacked run resumes separately and a separate one stacked, and measurement sees ordinary models.
Scalars (BatchNorm's num_batches_tracked, AdamW's step) are equal across the runs and kept once.
"""

from __future__ import annotations

import torch


def _cat(tensors: list) -> torch.Tensor:
    first = tensors[0]
    if not isinstance(first, torch.Tensor) or first.ndim == 0:
        return first
    return torch.cat(tensors)


def _chunk(value, k: int) -> list:
    if not isinstance(value, torch.Tensor) or value.ndim == 0:
        return [value.clone() if isinstance(value, torch.Tensor) else value for _ in range(k)]
    return [t.clone() for t in value.chunk(k)]


def stack_states(states: list[dict]) -> dict:
    """One stacked model state from K ordinary ones (same keys)."""
    return {key: _cat([s[key] for s in states]) for key in states[0]}


def unstack_state(state: dict, k: int) -> list[dict]:
    """The K ordinary model states of a stacked one."""
    parts = {key: _chunk(v, k) for key, v in state.items()}
    return [{key: parts[key][i] for key in state} for i in range(k)]


def stack_optimizer_states(states: list[dict]) -> dict:
    """One optimizer state for the stacked model (parameters in the same order as each run's)."""
    per_param = states[0]["state"]
    return {"state": {p: {name: _cat([s["state"][p][name] for s in states]) for name in per_param[p]}
                      for p in per_param},
            "param_groups": states[0]["param_groups"]}


def unstack_optimizer_state(state: dict, k: int) -> list[dict]:
    parts = {p: {name: _chunk(v, k) for name, v in entries.items()} for p, entries in state["state"].items()}
    return [{"state": {p: {name: chunks[i] for name, chunks in entries.items()} for p, entries in parts.items()},
             "param_groups": state["param_groups"]} for i in range(k)]
