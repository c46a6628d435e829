"""Test helpers for cachelayer and for provider authors: moto on loopback, call counters."""
