"""Training: data sources, the autoencoder recipes and (later) the transformer trainer."""
