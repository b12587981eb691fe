"""Starter data shipped for the offline quickstart: see README.md in this folder (the data card)."""
