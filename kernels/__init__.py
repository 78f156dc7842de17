"""Rasterizers: exact X-ray line integrals and RGB splatting, torch and CUDA backends."""
