"""callback-timing: when to call a customer back."""

__version__ = "0.1.0"
