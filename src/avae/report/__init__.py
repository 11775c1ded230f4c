"""Figures and tables from tidy results."""
