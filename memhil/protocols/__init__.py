"""Device characterization protocols and their runner (issue 6)."""
