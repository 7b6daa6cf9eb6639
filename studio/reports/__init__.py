"""Reports about runs and the machine: `llm-studio bench` (bench), `llm-studio report` (run_page), `llm-studio
leaderboard` (leaderboard, and ratings for the playground's judged pairs)."""
