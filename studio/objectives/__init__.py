"""What a run learns: the objectives, their specs (torch-free), and their metrics."""
