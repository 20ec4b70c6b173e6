"""Drop-in replacements for the reference harnesses' Python APIs."""
