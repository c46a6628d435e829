"""Demo function: reads the sample's secret from Secrets Manager with boto3 on every call."""

import time

import boto3

client = boto3.client("secretsmanager")


def handler(event, context):
    started = time.perf_counter()
    value = client.get_secret_value(SecretId="secret_info")["SecretString"]
    return {
        "values": {"secret": value},
        "read_ms": {"secret": (time.perf_counter() - started) * 1000},
    }
