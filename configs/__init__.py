"""YAML recipes shipped with robust-kd (installed as robust_kd.configs)."""
