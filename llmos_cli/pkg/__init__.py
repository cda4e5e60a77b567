"""Packages: manifest, archives, checks."""
