// Checks a CoIn signature outside Python: node verify_signature.mjs FILE KEY, or FILE --print-canonical
// FILE holds {"statement": ..., "signature": "<128 hex: Ed25519>"}, and may name its signer ("public_key",
// "signing_key" or the statement's "auditor_key"); KEY is the auditor's public key (64 hex, from
// GET /v1/auditor), the only key trusted: a file that names another signer is "bad" whatever its
// signature, since anyone can sign a statement of their own with a key of their own.
// Prints "ok" (exit 0) or "bad" (exit 1), or the RFC 8785 bytes with --print-canonical; exit 2 on
// malformed input (no verdict on the signature).
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

// Buffer.from(text, "hex") stops at the first non-hex character and keeps what came before: strict here.
function hexBytes(text, digits, what) {
  if (typeof text !== "string" || !new RegExp(`^[0-9a-fA-F]{${digits}}$`).test(text)) {
    throw new Error(`${what}: expected ${digits} hex digits`);
  }
  return Buffer.from(text, "hex");
}

function main(file, second) {
  const { statement, signature, ...rest } = JSON.parse(fs.readFileSync(file, "utf8"));
  const canonical = Buffer.from(canonicalize(statement), "utf8");
  if (second === "--print-canonical") {
    process.stdout.write(canonical);
    return 0;
  }
  const key = hexBytes(second, 64, "KEY");
  const signatureBytes = hexBytes(signature, 128, "signature");
  const named = rest.public_key ?? rest.signing_key ?? statement?.auditor_key;
  if (named !== undefined && !hexBytes(named, 64, "the file's signer").equals(key)) {
    console.log("bad");
    return 1;
  }
  const publicKey = crypto.createPublicKey({
    key: { kty: "OKP", crv: "Ed25519", x: key.toString("base64url") },
    format: "jwk",
  });
  const good = crypto.verify(null, canonical, publicKey, signatureBytes);
  console.log(good ? "ok" : "bad");
  return good ? 0 : 1;
}

try {
  process.exitCode = main(process.argv[2], process.argv[3]);
} catch (error) {
  console.error(error.message ?? error);
  process.exitCode = 2;
}
