"""A small, readable PyTorch training engine (the Lightning subset), vendored by scaffold."""

__version__ = "0.1.0"
