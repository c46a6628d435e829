"""Seed an AWS endpoint with the data of AWS's cache-extension-demo sample."""

from __future__ import annotations

from typing import Any, Dict, Optional

SAMPLE_TABLE = "DynamoDbTable"
SAMPLE_PARAMETER = "CacheExtensions_Parameter1"
SAMPLE_PARAMETER_VALUE = "MyParameter"
SAMPLE_SECRET = "secret_info"
SAMPLE_SECRET_VALUE = "MySecret"

SAMPLE_CONFIG_YAML = """\
parameters:
  - region: us-west-2
    names:
      - CacheExtensions_Parameter1
      - /aws/reference/secretsmanager/secret_info
dynamodb:
  - table: DynamoDbTable
    hashkey: pKey
    hashkeytype: S
    hashkeyvalue: pKey1
    sortkey: sKey
    sortkeytype: S
    sortkeyvalue: sKey1
"""


def seed_sample(endpoint: Optional[str] = None, region: str = "us-west-2") -> None:
    """Create the sample's table and item, parameter and secret at ``endpoint``."""
    import boto3

    from cachelayer.testing.moto import FAKE_CREDENTIALS

    kw: Dict[str, Any] = {"region_name": region}
    if endpoint:
        # A local endpoint (moto) gets moto's fake credentials, whatever the environment holds.
        kw["endpoint_url"] = endpoint
        kw["aws_access_key_id"] = FAKE_CREDENTIALS["AWS_ACCESS_KEY_ID"]
        kw["aws_secret_access_key"] = FAKE_CREDENTIALS["AWS_SECRET_ACCESS_KEY"]
    ddb = boto3.client("dynamodb", **kw)
    ddb.create_table(
        TableName=SAMPLE_TABLE,
        KeySchema=[
            {"AttributeName": "pKey", "KeyType": "HASH"},
            {"AttributeName": "sKey", "KeyType": "RANGE"},
        ],
        AttributeDefinitions=[
            {"AttributeName": "pKey", "AttributeType": "S"},
            {"AttributeName": "sKey", "AttributeType": "S"},
        ],
        BillingMode="PAY_PER_REQUEST",
    )
    ddb.put_item(
        TableName=SAMPLE_TABLE,
        Item={
            "pKey": {"S": "pKey1"},
            "sKey": {"S": "sKey1"},
            "data": {"S": "DynamoDB sample data"},
            "count": {"N": "12345678901234567890.125"},
            "enabled": {"BOOL": True},
            "nothing": {"NULL": True},
            "tags": {"SS": ["a", "b"]},
            "nested": {"M": {"n": {"N": "7"}, "l": {"L": [{"S": "x"}, {"N": "1.50"}]}}},
        },
    )
    boto3.client("ssm", **kw).put_parameter(
        Name=SAMPLE_PARAMETER, Value=SAMPLE_PARAMETER_VALUE, Type="String"
    )
    boto3.client("secretsmanager", **kw).create_secret(
        Name=SAMPLE_SECRET, SecretString=SAMPLE_SECRET_VALUE
    )
