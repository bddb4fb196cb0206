"""Evaluation presets (Suppl. 11.3): learning rate and epochs per model and kind of distilled set.

MiniC3D: lr 1e-2 for 500 epochs, but lr 1e-4 for 1000 epochs on FRePo sets; CNN+GRU / CNN+LSTM:
lr 1e-2 for 100 epochs. The frame-only ConvNet is raydd's probe, not the paper's: lr 1e-2, 300 epochs.
These epoch counts were set for distilled sets of 1-5 clips per class; on full real data pass
``--epochs`` (the steps per epoch grow with the data).
"""

from __future__ import annotations

STANDARD, FREPO = "standard", "frepo"
PRESET_NAMES = ("auto", STANDARD, FREPO)

_PRESETS: dict[str, dict[str, tuple[float, int]]] = {
    "minic3d": {STANDARD: (1e-2, 500), FREPO: (1e-4, 1000)},
    "cnn_gru": {STANDARD: (1e-2, 100), FREPO: (1e-2, 100)},
    "cnn_lstm": {STANDARD: (1e-2, 100), FREPO: (1e-2, 100)},
    "convnet": {STANDARD: (1e-2, 300), FREPO: (1e-4, 1000)},
}


def lr_and_epochs(model: str, preset: str) -> tuple[float, int]:
    return _PRESETS[model][preset]
