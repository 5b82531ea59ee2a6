"""Analog layers and the five learning algorithms (issues 3, 7-11)."""
