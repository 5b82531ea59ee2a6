"""Offline datasets: package-shipped sets and generators, no downloads."""
