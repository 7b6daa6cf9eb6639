"""Checkpoint folders: written atomically and read back (files), with the training state they hold whole
(training_state)."""
