"""The dashboard (`emberkeep web`): is the site protected right now, and how has it been doing.

``server`` is the HTTP side (listening, the token, CSRF, the one job at a time); ``page``
renders the HTML and its SVG charts from a status report (monitor/report.py) and the journal.
Only the standard library serves it: one page and a few JSON endpoints need no framework,
and a backup host should not grow a web stack to show them.
"""
