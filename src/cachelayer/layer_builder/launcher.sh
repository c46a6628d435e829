#!/bin/sh
# cachelayer Lambda extension launcher: lives at <layer>/extensions/<name>, runs
# `cachelayer.extension` from the layer's private packages in <layer>/cachelayer/ with an
# isolated interpreter, so the function's packages and PYTHONPATH never reach it.
#
# Interpreter: the layer's own (<layer>/cachelayer/python-runtime, a standalone layer built for
# any runtime) when there is one; else $CACHE_EXTENSION_PYTHON if set, else /var/lang/bin/python3
# (Lambda's Python runtimes), else python3 on PATH. The extension name Lambda expects is this
# file's name.
set -eu

name=$(basename "$0")
here=$(cd "$(dirname "$0")" && pwd -P)
packages="$here/../cachelayer"

if [ ! -d "$packages" ]; then
    echo "$name: packages directory $packages not found; the layer is incomplete (rebuild it with 'cachelayer layer build')" >&2
    exit 1
fi
packages=$(cd "$packages" && pwd -P)

bundled="$packages/python-runtime"
if [ -x "$bundled/bin/python3.11" ]; then
    # The layer's wheels were built for this interpreter only. Its libraries are found through
    # its absolute DT_RPATH; nothing of the function's may be preloaded or searched first.
    python="$bundled/bin/python3.11"
    unset LD_LIBRARY_PATH LD_PRELOAD LD_AUDIT
    # Debian's OpenSSL looks for CAs where Amazon Linux keeps none: use the bundled file.
    SSL_CERT_FILE="$bundled/ssl/cert.pem"
    export SSL_CERT_FILE
    unset SSL_CERT_DIR
elif [ -n "${CACHE_EXTENSION_PYTHON:-}" ]; then
    python=$CACHE_EXTENSION_PYTHON
elif [ -x /var/lang/bin/python3 ]; then
    python=/var/lang/bin/python3
elif command -v python3 >/dev/null 2>&1; then
    python=$(command -v python3)
else
    echo "$name: no Python interpreter: not a Python runtime and no python3 on PATH; build the layer with 'cachelayer layer build --runtime any' (it carries its own), or set CACHE_EXTENSION_PYTHON to one (3.9+)" >&2
    exit 127
fi

# -I ignores every PYTHON* variable and the user site; unset them anyway for any child process.
unset PYTHONPATH PYTHONHOME PYTHONSTARTUP PYTHONUSERBASE PYTHONSAFEPATH
# -S: no site-packages of the interpreter (Lambda's runtime ships its own boto3 there);
# -u: logs reach CloudWatch as they are written; -B: the layer is read-only.
# exec, so that SIGTERM from Lambda reaches Python directly. cachelayer.launch installs the
# startup caches, then runs cachelayer.extension (not through runpy, which costs imports).
exec "$python" -I -S -u -B -c '
import sys
sys.path.insert(0, sys.argv.pop(1))
from cachelayer.launch import run
run()
' "$packages" --name "$name"
