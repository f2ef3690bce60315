"""The semantic checks 4–8 of DESIGN §3: matching heads, duplicate and tokenization checks, the
verifier, progressive exposure and calibration. Builds on `auditor.protocol` only."""
