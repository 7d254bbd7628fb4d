"""Figures: matplotlib (Agg) functions that read recorded data only and return the Figure."""
