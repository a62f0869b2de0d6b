"""The run's report: one Markdown page with its figures, from every stage's artifacts."""
