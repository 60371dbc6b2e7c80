"""dnncost's version, defined once: the package metadata (pyproject.toml) and every result's
environment read it from here."""

__version__ = "0.1.0"
