"""Figures for the staff dashboard: activity per day, outcomes, providers ranked by risk."""
