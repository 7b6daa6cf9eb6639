"""Textual styles (.tcss) for the studio."""
