"""The byte-exact protocol of DESIGN §3 (with the departures in docs/protocol.md): what the provider
SDK and the auditor must agree on. Imports nothing of the semantic checks or the research harness."""

# coin/2 adds the repetition profile (auditor.protocol.repetition); coin/1 commitments still verify.
PROTOCOL_VERSION = "coin/2"
PROTOCOL_VERSIONS = ("coin/1", "coin/2")
