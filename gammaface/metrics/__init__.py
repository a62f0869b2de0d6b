"""Fairness metrics of classifiers and balance metrics of generated sets."""
