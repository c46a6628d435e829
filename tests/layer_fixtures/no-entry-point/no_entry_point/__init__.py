"""A package that declares no ``cachelayer`` entry point."""
