"""Act: the driver-independent part of acting on a decision (warm-pool roles and victims)."""
