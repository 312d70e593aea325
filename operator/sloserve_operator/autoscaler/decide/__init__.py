"""Decide: the pure policy and what it sizes with (capacity model, forecast, placement, profiles)."""
