"""Representational similarity analysis between network layers and brain data."""
