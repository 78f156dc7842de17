"""Nerfstudio glue: the model's controls in Nerfstudio's web viewer.

Nerfstudio installs every `ViewerElement` it finds on the model and its submodules, so these appear in
the standard viewer (`ns-train`, `ns-viewer`) under "Custom Elements" with no fork of it; changing one
re-renders. The main image ("Output type" rgb) shows the chosen modality:

- RGB: the photographs' appearance;
- X-ray: the line integrals as a grey image, through the window / level sliders;
- Blend: X-ray over RGB, half and half;
- Cut-away: the Gaussians beyond a movable plane are hidden, so the inside shows, coloured by density
  (a colour map of the attenuation) or by their transferred RGB colour.

Above them, the alignment's status (a warning where the data cannot decide it). Every browser that connects
opens on the object (OpeningView), the training cameras hidden.
"""

from __future__ import annotations

from typing import Callable, Optional, Tuple

import numpy as np
import torch
from torch import Tensor

from nerfstudio.viewer.viewer_elements import ViewerControl, ViewerDropdown, ViewerSlider, ViewerText
from nerfstudio.viewer.viewer import VISER_NERFSTUDIO_SCALE_RATIO

MODALITIES = ("RGB", "X-ray", "Blend", "Cut-away")
CUT_NORMALS = ("+x", "-x", "+y", "-y", "+z", "-z")


class OpeningView(ViewerControl):
    """Points every browser that connects at the object: Nerfstudio's default camera assumes a scene normalised
    around the origin, and this model keeps each frame as the data gives it, so the first picture was a blur from
    inside or against the object. `pose()` gives (position [3], look-at point [3], up [3]) in the world frame."""

    def __init__(self, pose: Callable[[], Tuple[np.ndarray, np.ndarray, np.ndarray]]):
        self.pose = pose

    def _setup(self, viewer) -> None:
        super()._setup(viewer)
        viewer.viser_server.on_client_connect(self.point)

    def point(self, client) -> None:
        # the first photograph's frustum would cover the picture: hidden ("Show Train Cams" brings them back) once the
        # viewer has drawn them (init_scene, which sets train_state last; a browser may connect before)
        if hasattr(self.viewer, "train_state") and self.viewer.hide_images.visible:
            self.viewer.set_camera_visibility(False)
            self.viewer.hide_images.visible, self.viewer.show_images.visible = False, True
        position, target, up = self.pose()
        with client.atomic():
            client.camera.up_direction = tuple(float(x) for x in up)
            client.camera.position = tuple(float(x) * VISER_NERFSTUDIO_SCALE_RATIO for x in position)
            client.camera.look_at = tuple(float(x) * VISER_NERFSTUDIO_SCALE_RATIO for x in target)


def opening_pose(first_photograph: Optional[Tensor], centre: Tensor, radius: float) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Where the viewer opens (position [3], look-at point [3], up [3]): where the first photograph (c2w [3, 4]) was
    taken, looking at the object (centre [3]); without photographs, 3 object radii away, a little above, z up."""
    centre = centre.detach().cpu().numpy()
    if first_photograph is not None:
        c2w = first_photograph.cpu().numpy()
        return c2w[:, 3], centre, c2w[:, 1]
    way = np.array([1.0, -1.0, 0.5]) / 1.5
    return centre + 3.0 * radius * way, centre, np.array([0.0, 0.0, 1.0])


class ViewerControls(torch.nn.Module):
    """Viewer elements (attribute names sort in the order the panel shows them) and how they compose
    the model's outputs into the picture the viewer shows."""

    def __init__(self, opening_pose: Optional[Callable[[], Tuple[np.ndarray, np.ndarray, np.ndarray]]] = None):
        super().__init__()
        self.opening_view = OpeningView(opening_pose) if opening_pose is not None else None
        self.alignment_status = ViewerText("Alignment", "not yet estimated (phase 1)", disabled=True,
                                           hint="the X-ray to RGB similarity; alignment.json in the run folder has it all")
        self.choose_modality = ViewerDropdown("Modality", "RGB", list(MODALITIES), cb_hook=self._show_cutaway)
        self.cutaway_normal = ViewerDropdown("Cut-away: hide beyond", "+x", list(CUT_NORMALS), visible=False)
        self.cutaway_position = ViewerSlider("Cut-away: plane (x radius)", 0.0, -1.0, 1.0, 0.02, visible=False)
        self.cutaway_colour = ViewerDropdown("Cut-away: colour by", "density", ["density", "colour"], visible=False)
        self.xray_level = ViewerSlider("X-ray level (x peak)", 0.5, 0.0, 1.0, 0.01)
        self.xray_window = ViewerSlider("X-ray window (x peak)", 1.0, 0.05, 2.0, 0.05)

    def _show_cutaway(self, element: ViewerDropdown) -> None:
        for e in (self.cutaway_normal, self.cutaway_position, self.cutaway_colour):
            if e.gui_handle is not None:  # installed in a running viewer
                e.set_visible(element.value == "Cut-away")

    @property
    def modality(self) -> str:
        return self.choose_modality.value

    @property
    def cut_plane(self) -> tuple:
        """(unit normal [3] as a tensor, offset in object radii, colour mode) of the cut-away."""
        name = self.cutaway_normal.value
        normal = torch.zeros(3)
        normal["xyz".index(name[1])] = 1.0 if name[0] == "+" else -1.0
        return normal, float(self.cutaway_position.value), self.cutaway_colour.value

    def window(self, line_integrals: Tensor, peak: float) -> Tensor:  # [H, W, 1] -> [H, W, 3] in [0, 1]
        """Grey display of line integrals: window and level in units of the data's peak line integral (the
        default shows 0 .. peak)."""
        width = float(self.xray_window.value) * peak
        low = float(self.xray_level.value) * peak - width / 2
        return ((line_integrals - low) / max(width, 1e-12)).clamp(0, 1).expand(*line_integrals.shape[:-1], 3)

    def compose(self, rgb: Optional[Tensor], xray: Optional[Tensor], cutaway: Optional[Tensor]) -> Tensor:
        """The picture of the chosen modality from the renders [H, W, 3] that the model has (an
        X-ray-only model shows its X-ray, an RGB-only one its photograph)."""
        choice = self.modality
        if choice == "Cut-away" and cutaway is not None:
            return cutaway
        if xray is not None and (rgb is None or choice == "X-ray"):
            return xray
        if choice == "Blend" and xray is not None:
            return 0.5 * rgb + 0.5 * xray
        return rgb
