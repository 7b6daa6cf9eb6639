"""Reports about runs and the machine: `llm-studio bench` (bench) and `llm-studio report` (run_page)."""
