"""Training: one core (optimisers, AMP, compile, DDP, checkpoints, logging, progress) and thin recipes on top."""
