"""Demo function: reads the sample's item, parameter and secret through the cachelayer extension."""

import os
import time
import urllib.request

BASE = "http://localhost:" + os.environ.get("CACHE_EXTENSION_PORT", "4000")
READS = {
    "item": "/dynamodb?name=DynamoDbTable-pKey1-sKey1",
    "parameter": "/parameters?name=CacheExtensions_Parameter1",
    "secret": "/secrets?name=secret_info",
}


def handler(event, context):
    token = os.environ.get("AWS_SESSION_TOKEN", "")
    values, cache, took = {}, {}, {}
    for key, path in READS.items():
        started = time.perf_counter()
        request = urllib.request.Request(
            BASE + path, headers={"X-Aws-Parameters-Secrets-Token": token}
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            # The item's JSON is kept as text: its numbers carry DynamoDB's exact digits, which
            # a float would round.
            values[key] = response.read().decode()
            cache[key] = response.headers.get("X-Cache")
        took[key] = (time.perf_counter() - started) * 1000
    return {"values": values, "cache": cache, "read_ms": took}
