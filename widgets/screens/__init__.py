"""Full-screen views of the studio."""
