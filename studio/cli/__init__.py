"""`llm-studio`: the command line (main), its grammar both ways (parser) and its subcommands (commands)."""
