"""HTTP/JSON gateway and browser gallery over the service's front (see routes.py).

`routes` maps URLs to the servicer's own methods, `stream` writes NDJSON or
server-sent events, `calls` turns a servicer's abort into an HTTP error,
`connections` caps the connections; `gallery/` holds the static page.
"""
