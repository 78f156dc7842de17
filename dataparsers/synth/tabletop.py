"""What a phone capture's photographs show besides the object: a textured table it stands on and a room.

Lives in the X-ray frame (z up, the scanner's axis, which the generators take as the object's up). The
table is a round top at the object's lowest point; the room is an environment at infinity (walls with
panels, a floor below the horizon), so that the photographs carry texture everywhere, as real ones do,
and no pixel of them says where the object ends.

Example:
    >>> import numpy as np
    >>> from insideout_ns.dataparsers.synth.tabletop import Tabletop
    >>> table = Tabletop(height=-1.0, radius=4.0, cell=0.5)
    >>> rgb, depth = table.shade(np.array([[0.0, 0.0, 1.0]]), np.array([[0.0, 0.0, -1.0]]))
    >>> float(depth[0])  # straight down from z = 1 onto the top at z = -1
    2.0
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

import numpy as np


@dataclass
class Tabletop:
    height: float  # z of the table's top (X-ray frame)
    radius: float  # radius of the round top about the z axis
    cell: float  # side of the top's checker cells (a wood-like two-tone pattern)

    def shade(self, origins: np.ndarray, dirs: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:  # [R, 3], [R, 3]
        """Colour [R, 3] in [0, 1] and the distance to the table top [R] (inf where a ray sees the room)."""
        dz = dirs[:, 2]
        t = np.where(dz < -1e-9, (self.height - origins[:, 2]) / np.minimum(dz, -1e-9), np.inf)  # ray meets the plane
        p = origins + np.where(np.isfinite(t), t, 0.0)[:, None] * dirs
        on = np.isfinite(t) & (t > 0) & (np.hypot(p[:, 0], p[:, 1]) <= self.radius)
        # The top: two tones of wood in cells, each cell's own brightness (a hash of its index), grain along x
        i, j = np.floor(p[:, 0] / self.cell), np.floor(p[:, 1] / self.cell)
        tone = np.mod(i + j, 2.0)[:, None]
        jitter = (0.85 + 0.3 * np.mod(np.sin(12.9898 * i + 78.233 * j) * 43758.5453, 1.0))[:, None]
        grain = 0.9 + 0.1 * np.sin(40.0 * p[:, 1:2] / self.cell + 3.0 * np.sin(5.0 * p[:, 0:1] / self.cell))
        wood = ((1 - tone) * np.array([0.62, 0.45, 0.28]) + tone * np.array([0.42, 0.28, 0.16])) * jitter * grain
        # The room, by direction: panelled walls above the horizon, a dark floor below it
        az, el = np.arctan2(dirs[:, 1], dirs[:, 0]), np.arcsin(np.clip(dirs[:, 2], -1.0, 1.0))
        panel = 0.5 + 0.5 * np.sign(np.sin(8.0 * az) * np.sin(6.0 * el + 0.5))
        wall = 0.55 + 0.2 * panel[:, None] * np.array([1.0, 0.9, 0.7]) + 0.1 * np.cos(3.0 * az)[:, None]
        floor = np.array([0.3, 0.3, 0.33]) * (0.8 + 0.2 * np.sign(np.sin(10.0 * az)))[:, None]
        room = np.where((el > 0.0)[:, None], wall, floor)
        rgb = np.clip(np.where(on[:, None], wood, room), 0.0, 1.0)
        return rgb, np.where(on, t, np.inf)
