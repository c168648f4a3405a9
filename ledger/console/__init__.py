"""The operator console: server-rendered pages at /console for the consortium's operator and its
consumer desk, inside the API's Flask app.

Pages are Jinja templates; htmx and Chart.js, vendored from npm (`assets-src/`, checked by
`scripts/vendor_assets.py`), are served from this package's static folder, so the console works with no
network beyond the app. All text comes from `catalogue.py`, Chinese by default.

Security, in one place (`views.py`): a server-side session in Redis behind an HttpOnly, SameSite=Strict
cookie (Secure outside demo and test) that expires when idle and after a fixed lifetime; a CSRF token
on every state-changing request; sign-in attempts counted against the same per-address limit as API
keys; every action recorded with who took it; a Content-Security-Policy that allows only the app's own
scripts and styles.
"""

from ledger.console.views import blp

__all__ = ["blp"]
