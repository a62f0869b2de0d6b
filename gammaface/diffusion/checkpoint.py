"""Training checkpoints: weights in safetensors, optimiser state loaded with weights_only, and a
JSON record that ties the folder to the config that wrote it.

Nothing here unpickles arbitrary objects: model files are safetensors only, and the optimiser
state goes through torch.load(weights_only=True), which refuses anything but tensors and
plain containers.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from gammaface.errors import UserError

MODEL_FILE = "model.safetensors"
EMA_FILE = "ema.safetensors"
OPTIMIZER_FILE = "optimizer.pt"
STATE_FILE = "trainer_state.json"
FILES = (MODEL_FILE, EMA_FILE, OPTIMIZER_FILE, STATE_FILE)
FILES_WITHOUT_EMA = (MODEL_FILE, OPTIMIZER_FILE, STATE_FILE)


class CheckpointError(UserError):
    """A checkpoint folder that cannot be trusted: corrupt, incomplete or from another config."""


def save(folder: Path, model_state: dict[str, torch.Tensor], ema_state: dict[str, torch.Tensor] | None,
         optimizer_state: dict[str, Any], state: dict[str, Any]) -> None:
    """Write a checkpoint; a model trained without EMA passes ema_state=None."""
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in model_state.items()},
              str(folder / MODEL_FILE))
    if ema_state is not None:
        save_file({k: v.detach().cpu().contiguous() for k, v in ema_state.items()},
                  str(folder / EMA_FILE))
    torch.save(optimizer_state, folder / OPTIMIZER_FILE)
    (folder / STATE_FILE).write_text(json.dumps(state, indent=2, sort_keys=True))


def read_state(folder: Path, config_hash: str, files: tuple[str, ...] = FILES) -> dict[str, Any]:
    """The JSON record, after checking that every file is there and the config matches."""
    for name in files:
        if not (folder / name).is_file():
            raise CheckpointError(f"checkpoint {folder} is incomplete: {name} is missing.")
    try:
        state = json.loads((folder / STATE_FILE).read_text())
    except json.JSONDecodeError:
        raise CheckpointError(f"checkpoint {folder} is corrupt: {STATE_FILE} is not valid JSON.") from None
    found = state.get("config_hash")
    if found != config_hash:
        raise CheckpointError(f"checkpoint {folder} was written for config {found}, not the current "
                              f"{config_hash}; remove it or point the run elsewhere.")
    return state


def load_weights(folder: Path, name: str) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(folder / name))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {folder} is corrupt: {name} does not load ({exc}).") from None


def load_optimizer(folder: Path) -> dict[str, Any]:
    try:
        return torch.load(folder / OPTIMIZER_FILE, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for a damaged or unsafe file
        raise CheckpointError(f"checkpoint {folder} is corrupt: {OPTIMIZER_FILE} does not load "
                              f"({type(exc).__name__}).") from None
