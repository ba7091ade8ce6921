"""Training spec'd models: text data, batches, the loop, checkpoints and sampling."""
