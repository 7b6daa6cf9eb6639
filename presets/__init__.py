"""Model and training presets, one TOML file each; loaded by studio.presets."""
