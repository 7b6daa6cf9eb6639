"""The Textual widgets of the studio, one per file."""
