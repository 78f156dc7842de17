"""Solids on grids (numpy): the largest connected part of a mask with its holes filled, and the surface of a solid
in world coordinates; the hulls, the masks of photographs without masks and the density's outline all take them.

Example:
    >>> import numpy as np
    >>> from insideout_ns.solids import largest_part
    >>> mask = np.zeros((5, 7), bool); mask[1:4, 1:4] = True; mask[2, 2] = False; mask[2, 6] = True
    >>> largest_part(mask).astype(int).sum()  # the 3 x 3 square, its hole filled, without the speck apart
    9
"""

from __future__ import annotations

import numpy as np


def largest_part(mask: np.ndarray) -> np.ndarray:  # [...] bool -> [...] bool
    """The largest connected part of a mask (2-D or 3-D), holes filled; an empty mask as it is."""
    from scipy import ndimage

    labels, n = ndimage.label(mask)
    if n == 0:
        return mask
    sizes = ndimage.sum(np.ones(labels.shape), labels, range(1, n + 1))
    return ndimage.binary_fill_holes(labels == 1 + int(np.argmax(sizes)))


def surface_points(solid: np.ndarray, box: np.ndarray) -> np.ndarray:  # [X, Y, Z] bool, [2, 3] -> [K, 3]
    """Vertices of the solid's surface (marching cubes at 0.5, sub-voxel; padded so that it closes at the grid's
    edge) in the world coordinates of a grid of cells over `box`."""
    from skimage.measure import marching_cubes

    verts = marching_cubes(np.pad(solid.astype(np.float32), 1), 0.5)[0] - 1  # cell index coordinates
    return cells_to_world(verts, box, solid.shape)


def cells_to_world(index: np.ndarray, box: np.ndarray, shape) -> np.ndarray:  # [K, 3] -> [K, 3]
    """Cell index coordinates (marching cubes' vertices; cell i's centre at i) of a grid of `shape` cells over `box`
    [2, 3], in world coordinates."""
    return np.asarray(box[0]) + (index + 0.5) * (np.asarray(box[1]) - np.asarray(box[0])) / np.array(shape)
