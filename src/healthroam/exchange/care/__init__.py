"""Cross-institution care: card check-in, care relationships, the access gate in front of a
resident's whole record (break-the-glass, consent) and the clinician's summary."""
