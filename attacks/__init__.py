"""Adversarial attacks and robustness evaluation for any nn.Module mapping [0, 1] images to logits."""
