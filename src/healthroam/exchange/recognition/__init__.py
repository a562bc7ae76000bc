"""Result recognition (检查检验结果互认): equivalent results from any institution within their
validity window, whether each is recognised, alerts on new orders and avoided-duplicate counts.

``model`` holds the rules and the table format, ``service`` the use cases (``$recent-results``,
order alerts for FHIR and HL7 v2, outcomes, counts), ``repository`` the SQL; the default table
is ``data/recognition.toml``. See docs/result-recognition.md.
"""
