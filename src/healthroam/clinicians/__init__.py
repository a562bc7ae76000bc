"""Clinician accounts of institutions, their sign-in sessions and login lockout."""
