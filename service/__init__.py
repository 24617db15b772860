"""The HTTP face of the service: the Starlette app, its routes, auth, errors and the CLI."""
