"""The Hugging Face side: folders read without torch (folder), and what transformers builds from one, asked in a
child process (inspection)."""
