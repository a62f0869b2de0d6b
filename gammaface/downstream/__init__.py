"""Downstream classifiers trained on real + generated data at a mixing ratio, their evaluation,
and the comparison of methods and ratios read back from MLflow."""
