"""The live status page: `schemahub serve` (server.py) over the JSON of status.py, with offline static files."""
