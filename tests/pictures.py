"""Judging rendered pictures in tests: colour vs grey."""

import numpy as np


def colourfulness(img: np.ndarray) -> float:
    """Mean spread between the colour channels over the lit pixels of a uint8 picture (0 for grey)."""
    img = img[..., :3].astype(np.float32)
    lit = img.max(-1) > 15
    return float((img.max(-1) - img.min(-1))[lit].mean()) if lit.any() else 0.0
