"""Plots, one module per method family (matplotlib, Agg-safe: every function returns the Figure)."""
