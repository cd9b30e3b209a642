"""The learning layer: score networks, losses, run configs, the normalisation and encoding of
fields into network channels, and building or loading a denoiser from a checkpoint.
"""
