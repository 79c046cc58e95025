"""The dashboard (`emberkeep web`): is the site protected right now, and how has it been doing.

The HTTP side: ``server`` binds and runs it (where it may listen: ``listen`` reads the
address, token file and TLS files), ``handler`` answers each request (the routes; the token,
Host and CSRF checks), ``dashboard`` holds what requests share and runs the one job at a
time. ``page`` renders the HTML and its SVG charts from a status report (monitor/report.py)
and the journal, ``data`` reads what the pages chart and list.
Only the standard library serves it: one page and a few JSON endpoints need no framework,
and a backup host should not grow a web stack to show them.
"""
