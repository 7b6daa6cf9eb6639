"""Training: the Accelerate loop (worker), optimisers and learning-rate schedules, checkpoints."""
