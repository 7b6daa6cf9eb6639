"""llm-studio: the engine (everything but the Textual widgets)."""
