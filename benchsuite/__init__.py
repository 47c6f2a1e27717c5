"""benchsuite: declarative benchmarks for representation similarity."""

__version__ = "0.1.0"
