"""Test handler module that cannot be imported (the runtime reports Runtime.ImportModuleError)."""

raise ImportError("this handler module is broken on purpose")
