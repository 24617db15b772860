"""The client portal (SPEC 12): server-rendered pages where a client's developers see
their configurations and deliveries and act on them, entered through a magic link that
the API makes. Also the browser's other pages: `GET /` and the API reference.

`links` signs and reads the magic links and CSRF tokens (no I/O); `data` is the one
module that reads and writes, through the same domain functions as the API, scoped to
the session's client (and configuration); `pages` renders templates and error pages
with the security headers; `routes/` has one module per resource.
"""
