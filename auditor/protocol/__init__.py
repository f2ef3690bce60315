"""The byte-exact protocol of DESIGN §3 (with the departures in docs/protocol.md): what the provider
SDK and the auditor must agree on. Imports nothing of the semantic checks or the research harness."""

PROTOCOL_VERSION = "coin/1"
