"""The engine's version (also scaffold's and the template's): a leaf module that imports nothing."""

__version__ = "0.2.0"
