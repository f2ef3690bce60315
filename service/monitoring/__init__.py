"""Provider-level monitoring: a monitor per provider and period, updated with every verdict; calibrations."""
