"""The reports resource: one report per billed request, and its signed receipt."""
