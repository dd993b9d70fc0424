"""The one version of the package, the template and the engine (`ci/release` sets it)."""

__version__ = "0.2.0"
