"""The built-in providers (SSM Parameter Store, Secrets Manager, DynamoDB), each an ordinary plugin.

Nothing here is imported by the core: each provider is found through its ``cachelayer`` entry
point, exactly as a third party's would be.
"""
