"""Instrument capability protocols, driver adapters, Station YAML and the safety guard."""
