"""Ray plumbing, in one place: joining or starting Ray (`runtime`), tasks whose failures read
as one sentence (`tasks`), and Ray Train's fits and checkpoints (`train`). The libraries that
train on Ray Train use `train`; only the stages connect to a cluster."""
