"""healthroam: the provincial population-health information platform."""

__version__ = "0.1.0"
