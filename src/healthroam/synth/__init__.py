"""Synthetic province: a realistic population, institutions and source records with errors."""
