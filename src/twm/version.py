"""The package version, in a module of its own so that modules can read it without importing the
package (whose ``__init__`` reaches the top layer, ``twm.api``, lazily)."""

__version__ = "0.1.0"
