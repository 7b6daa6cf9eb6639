"""Benchmark tasks from local files: multiple choice scored by log-likelihood, generation against references."""
