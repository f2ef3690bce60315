// Checks a CoIn signature outside Python: node verify_signature.mjs FILE [--print-canonical]
// FILE holds {"statement": ..., "signature": "<hex Ed25519>", "public_key": "<hex raw Ed25519 key>"}.
// Prints "ok" (exit 0) or "bad" (exit 1); with --print-canonical, prints the RFC 8785 bytes instead.
import crypto from "node:crypto";
import fs from "node:fs";

// RFC 8785 (JCS): keys sorted by UTF-16 code units (the default sort), primitives as JSON.stringify
// writes them, which is exactly the JCS serialisation of numbers and strings.
function canonicalize(value) {
  if (value === null || typeof value !== "object") return JSON.stringify(value);
  if (Array.isArray(value)) return `[${value.map(canonicalize).join(",")}]`;
  const members = Object.keys(value)
    .sort()
    .map((key) => `${JSON.stringify(key)}:${canonicalize(value[key])}`);
  return `{${members.join(",")}}`;
}

function main(file, printCanonical) {
  const { statement, signature, public_key: publicKey } = JSON.parse(fs.readFileSync(file, "utf8"));
  const canonical = Buffer.from(canonicalize(statement), "utf8");
  if (printCanonical) {
    process.stdout.write(canonical);
    return 0;
  }
  const x = Buffer.from(publicKey, "hex").toString("base64url");
  const key = crypto.createPublicKey({ key: { kty: "OKP", crv: "Ed25519", x }, format: "jwk" });
  const good = crypto.verify(null, canonical, key, Buffer.from(signature, "hex"));
  console.log(good ? "ok" : "bad");
  return good ? 0 : 1;
}

try {
  process.exitCode = main(process.argv[2], process.argv.includes("--print-canonical"));
} catch (error) {
  console.error(error);
  process.exitCode = 2; // malformed input: no verdict on the signature
}
