"""The environment variables Lambda gives a function and its extensions, and the credentials."""

from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path
from typing import Dict, Mapping

import attrs

# Variables Lambda sets for the function but withholds from extensions (LAMBDA_API.md).
HIDDEN_FROM_EXTENSIONS = frozenset(
    {
        "AWS_EXECUTION_ENV",
        "AWS_LAMBDA_LOG_GROUP_NAME",
        "AWS_LAMBDA_LOG_STREAM_NAME",
        "AWS_XRAY_CONTEXT_MISSING",
        "AWS_XRAY_DAEMON_ADDRESS",
        "LAMBDA_RUNTIME_DIR",
        "LAMBDA_TASK_ROOT",
        "_AWS_XRAY_DAEMON_ADDRESS",
        "_AWS_XRAY_DAEMON_PORT",
        "_HANDLER",
    }
)
# Host variables a function sees on Lambda too; everything else of the host stays out.
PASSED_FROM_HOST = ("PATH", "LANG", "LD_LIBRARY_PATH", "TZ")
# Lambda hands the function its execution role's temporary credentials. Locally they come
# from the caller's environment when set there, else these inert test ones (moto takes any).
CREDENTIALS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
TEST_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "ASIALOCALTESTKEY0000",
    "AWS_SECRET_ACCESS_KEY": "local-test-secret-access-key",
}
# Lambda's own search path for shared libraries; the caller's, if set, comes first.
LAMBDA_LD_LIBRARY_PATH = (
    "/var/lang/lib:/lib64:/usr/lib64:/var/runtime:/var/runtime/lib:/var/task:/var/task/lib:/opt/lib"
)
LAMBDA_PATH = "/var/lang/bin:/usr/local/bin:/usr/bin/:/bin:/opt/bin"


def resolve_credentials(
    user_env: Mapping[str, str], host_env: Mapping[str, str] = os.environ
) -> Dict[str, str]:
    """The caller's credentials (``user_env``, else ``host_env``), or test ones.

    Lambda always sets a session token (execution roles give temporary credentials), and
    functions read it as the extension's auth token; long-term keys come without one, so
    a local one is made up then: it signs nothing that reaches real AWS unnoticed, since
    AWS refuses an unknown token, and moto ignores it.
    """
    for source in (user_env, host_env):
        if source.get("AWS_ACCESS_KEY_ID") and source.get("AWS_SECRET_ACCESS_KEY"):
            creds = {k: source[k] for k in CREDENTIALS if source.get(k)}
            break
    else:
        creds = dict(TEST_CREDENTIALS)
    creds.setdefault("AWS_SESSION_TOKEN", f"local-session-token-{uuid.uuid4().hex}")
    return creds


def region_of(user_env: Mapping[str, str]) -> str:
    """The function's region: the caller's ``AWS_REGION`` or ``AWS_DEFAULT_REGION``."""
    return user_env.get("AWS_REGION") or user_env.get("AWS_DEFAULT_REGION") or "us-east-1"


@attrs.frozen
class FunctionSettings:
    """What the function's environment is made of: its configuration and the caller's ``env``."""

    function_name: str
    handler: str
    handler_dir: Path
    memory_size_mb: int
    runtime_python: str
    log_stream_name: str
    user_env: Mapping[str, str]
    credentials: Mapping[str, str]

    def function_environment(self, runtime_api: str) -> Dict[str, str]:
        """The variables the runtime gets (Lambda's defaults, then the caller's ``env``)."""
        region = region_of(self.user_env)
        env = {k: os.environ[k] for k in PASSED_FROM_HOST if k in os.environ}
        env.update(self.credentials)
        env.update(
            {
                "AWS_REGION": region,
                "AWS_DEFAULT_REGION": region,
                "AWS_LAMBDA_FUNCTION_NAME": self.function_name,
                "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(self.memory_size_mb),
                "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
                "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
                "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{self.function_name}",
                "AWS_LAMBDA_LOG_STREAM_NAME": self.log_stream_name,
                "AWS_LAMBDA_RUNTIME_API": runtime_api,
                "AWS_EXECUTION_ENV": "AWS_Lambda_python{}.{}".format(*sys.version_info[:2]),
                "AWS_XRAY_CONTEXT_MISSING": "LOG_ERROR",
                "AWS_XRAY_DAEMON_ADDRESS": "169.254.79.129:2000",
                "_AWS_XRAY_DAEMON_ADDRESS": "169.254.79.129",
                "_AWS_XRAY_DAEMON_PORT": "2000",
                "LAMBDA_TASK_ROOT": str(self.handler_dir),
                "LAMBDA_RUNTIME_DIR": str(Path(self.runtime_python).parent),
                "_HANDLER": self.handler,
                "LANG": env.get("LANG", "en_US.UTF-8"),
                "TZ": ":UTC",
                # The host's PATH first: the runtime's interpreter and tools live there.
                "PATH": ":".join(p for p in (env.get("PATH"), LAMBDA_PATH) if p),
                "LD_LIBRARY_PATH": ":".join(
                    p for p in (env.get("LD_LIBRARY_PATH"), LAMBDA_LD_LIBRARY_PATH) if p
                ),
            }
        )
        env.update(self.user_env)
        # The emulator owns these two, whatever the caller passed.
        env["AWS_LAMBDA_RUNTIME_API"] = runtime_api
        env["_HANDLER"] = self.handler
        return env


def extension_environment(function_env: Mapping[str, str]) -> Dict[str, str]:
    """The variables an extension gets: the function's minus those Lambda withholds."""
    return {k: v for k, v in function_env.items() if k not in HIDDEN_FROM_EXTENSIONS}
