"""The HTTP-free core: config, durations, cache, router, application wiring and lifecycle."""
