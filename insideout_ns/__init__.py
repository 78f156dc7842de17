"""InsideOut for Nerfstudio: one set of 3D Gaussians for the outside (RGB) and the inside (X-ray) of an object."""

__version__ = "0.1.0"
