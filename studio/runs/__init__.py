"""Acting on runs: from a config to a run folder ready to launch (prepare), and launching, stopping, deleting
(control)."""
