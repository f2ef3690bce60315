"""The challenges resource: what a provider must open, and its answers."""
