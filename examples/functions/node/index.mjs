// Sample Node.js function: reads the sample's parameter, secret and DynamoDB item through the
// cachelayer extension on localhost, never calling AWS itself.
import http from "node:http";

const PORT = Number(process.env.CACHE_EXTENSION_PORT || 4000);
const TIMEOUT_MS = 3000;

// [route, name] of each value this function reads; the names match config.yaml.
const SOURCES = {
  parameter: ["parameters", "CacheExtensions_Parameter1"],
  secret: ["secrets", "secret_info"],
  item: ["dynamodb", "DynamoDbTable-pKey1-sKey1"],
};

export class ExtensionError extends Error {
  constructor(status, code, message) {
    super(`${status} ${code}: ${message}`);
    this.status = status;
    this.code = code;
    this.detail = message;
  }
}

// GET one value: text as a string, DynamoDB items (application/json) parsed.
export function read(route, name) {
  const path = `/${route}?name=${encodeURIComponent(name)}`;
  const options = {
    host: "localhost", // the extension listens on 127.0.0.1 and ::1, so either resolution works
    port: PORT,
    path,
    // The extension only answers requests that carry the environment's session token.
    headers: { "X-Aws-Parameters-Secrets-Token": process.env.AWS_SESSION_TOKEN || "" },
    timeout: TIMEOUT_MS,
  };
  return new Promise((resolve, reject) => {
    const req = http.get(options, (res) => {
      const chunks = [];
      res.on("data", (c) => chunks.push(c));
      res.on("end", () => {
        const body = Buffer.concat(chunks).toString("utf8");
        if (res.statusCode !== 200) {
          reject(parseError(res.statusCode, body));
        } else if ((res.headers["content-type"] || "").startsWith("application/json")) {
          resolve(JSON.parse(body));
        } else {
          resolve(body);
        }
      });
    });
    req.on("timeout", () => req.destroy(new Error(`no answer from the extension in ${TIMEOUT_MS} ms`)));
    req.on("error", (err) => reject(new ExtensionError(0, "Unreachable", `cannot reach the extension on port ${PORT}: ${err.message}`)));
  });
}

// The extension answers errors as {"error": "<Code>", "message": "..."}; tolerate anything else.
function parseError(status, body) {
  try {
    const data = JSON.parse(body);
    return new ExtensionError(status, String(data.error), String(data.message));
  } catch {
    return new ExtensionError(status, "Unknown", body.slice(0, 200));
  }
}

// Read every source; report each failure instead of failing the whole invocation.
export const handler = async () => {
  const values = {};
  const errors = {};
  for (const [key, [route, name]] of Object.entries(SOURCES)) {
    try {
      values[key] = await read(route, name);
    } catch (err) {
      console.error(`reading ${route}?name=${name} failed: ${err.message}`); // CloudWatch Logs
      errors[key] = { status: err.status ?? 0, error: err.code ?? "Error", message: err.detail ?? err.message };
    }
  }
  return { statusCode: Object.keys(errors).length ? 502 : 200, values, errors };
};
