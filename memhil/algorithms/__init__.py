"""Analog layers and the five learning algorithms."""
