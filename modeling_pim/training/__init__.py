"""Training: the `Trainer` subclass, metrics, and the bundled `evaluate` accuracy module (offline fallback)."""
