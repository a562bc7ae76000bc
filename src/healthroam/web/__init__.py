"""The clinician page: Jinja2 templates, the message catalogue and small static files.

Served by ``api/web.py``; server-rendered HTML, no build step, nothing from a CDN.
"""
