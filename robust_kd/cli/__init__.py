"""The robust-kd command line."""
