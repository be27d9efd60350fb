"""robust-kd: train, distil, attack and compare compact image classifiers."""

__version__ = "0.1.0"
