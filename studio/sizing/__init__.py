"""Sizes before anything is built (torch-free): parameters, FLOPs, training memory, and what to change when a run
does not fit."""
