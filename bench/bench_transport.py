"""The SigV4 transport candidates side by side: import cost, memory, and time per signature.

Candidates: cachelayer's stdlib signer (``cachelayer.awsjson``), AWS's ``awscrt`` (when
installed), a trimmed botocore (``botocore.auth`` + ``botocore.awsrequest`` only) and a full
boto3 client. Each import is measured in fresh interpreters (median of ``--rounds``).

    .venv/bin/python bench/bench_transport.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from typing import Dict, List

PROBE = r"""
import json, resource, sys, time
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
base = rss()
started = time.perf_counter()
{setup}
imported = time.perf_counter() - started
sign_s = None
if {has_sign}:
    n = 2000
    t0 = time.perf_counter()
    for i in range(n):
{sign}
    sign_s = (time.perf_counter() - t0) / n
print(json.dumps({{"import_ms": imported * 1000, "rss_mb": rss() - base, "sign_us": sign_s and sign_s * 1e6}}))
"""

BODY = '{"Name":"/app/db/password","WithDecryption":true}'

CANDIDATES: Dict[str, Dict[str, str]] = {
    # The whole lean transport: signer, credentials, endpoints, http.client, ssl, attrs.
    "stdlib transport (cachelayer.awsjson)": {
        "setup": "from cachelayer.awsjson import sign",
        "sign": (
            "        sign('POST', 'https://ssm.us-west-2.amazonaws.com/', "
            "{'X-Amz-Target': 'AmazonSSM.GetParameter'}, "
            f"{BODY!r}.encode(), access_key='AKID', secret_key='s', "
            "region='us-west-2', service='ssm', session_token='t')"
        ),
    },
    "awscrt": {
        "setup": (
            "import datetime\n"
            "from awscrt import auth, http as crt_http\n"
            "creds = auth.AwsCredentialsProvider.new_static('AKID', 's', 't')\n"
            "cfg = auth.AwsSigningConfig(algorithm=auth.AwsSigningAlgorithm.V4, "
            "signature_type=auth.AwsSignatureType.HTTP_REQUEST_HEADERS, "
            "credentials_provider=creds, region='us-west-2', service='ssm')"
        ),
        "sign": (
            "        req = crt_http.HttpRequest('POST', '/', crt_http.HttpHeaders("
            "[('Host', 'ssm.us-west-2.amazonaws.com'), ('X-Amz-Target', 'AmazonSSM.GetParameter')]))\n"
            "        auth.aws_sign_request(req, cfg).result()"
        ),
    },
    "trimmed botocore (auth + awsrequest)": {
        "setup": (
            "from botocore.auth import SigV4Auth\n"
            "from botocore.awsrequest import AWSRequest\n"
            "from botocore.credentials import Credentials\n"
            "signer = SigV4Auth(Credentials('AKID', 's', 't'), 'ssm', 'us-west-2')"
        ),
        "sign": (
            "        r = AWSRequest(method='POST', url='https://ssm.us-west-2.amazonaws.com/', "
            f"data={BODY!r}.encode(), headers={{'X-Amz-Target': 'AmazonSSM.GetParameter'}})\n"
            "        signer.add_auth(r)"
        ),
    },
    "boto3 + one ssm client": {
        "setup": (
            "import boto3\n"
            "boto3.session.Session().client('ssm', region_name='us-west-2', "
            "aws_access_key_id='a', aws_secret_access_key='b')"
        ),
        "sign": "",
    },
}


def run(setup: str, sign: str) -> Dict[str, float]:
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            PROBE.format(setup=setup, sign=sign or "        pass", has_sign=bool(sign)),
        ],
        capture_output=True,
        text=True,
    )
    if out.returncode:
        return {"error": 1.0}
    data: Dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    print(f"median of {args.rounds} fresh interpreters")
    print(f"{'candidate':40}{'import ms':>10}{'RSS MB':>9}{'sign µs':>9}")
    for name, spec in CANDIDATES.items():
        results: List[Dict[str, float]] = [
            run(spec["setup"], spec["sign"]) for _ in range(args.rounds)
        ]
        if any("error" in r for r in results):
            print(f"{name:40}{'not installed':>28}")
            continue
        imp = statistics.median(r["import_ms"] for r in results)
        rss = statistics.median(r["rss_mb"] for r in results)
        signs = [r["sign_us"] for r in results if r.get("sign_us")]
        sign_s = f"{statistics.median(signs):.0f}" if signs else "-"
        print(f"{name:40}{imp:>10.1f}{rss:>9.1f}{sign_s:>9}")


if __name__ == "__main__":
    main()
