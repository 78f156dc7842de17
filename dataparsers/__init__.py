"""The paired RGB + X-ray scene format: reading, writing, readers of other layouts, data generators."""
