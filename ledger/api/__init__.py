"""HTTP API: flask-smorest blueprints and marshmallow schemas. The only layer that knows about HTTP."""
