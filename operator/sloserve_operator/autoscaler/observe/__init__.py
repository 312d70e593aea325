"""Observe: turn runtime metrics (through Prometheus or a direct scrape) into an Observation."""
