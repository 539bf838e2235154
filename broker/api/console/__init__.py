"""The web console: server-rendered pages for operators, auditors and consulates (Jinja2).

Served by the HTTP API's application under /console, behind the same bearer tokens: a token's
authority decides the role (its gateway: operator; its auditor: auditor; a consulate: consulate),
and every page and action checks it. Imports the API's context and everything below it.
"""
