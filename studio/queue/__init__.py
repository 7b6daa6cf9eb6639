"""The run queue: its entries, the runner process that starts them one after another, and sweeps."""
