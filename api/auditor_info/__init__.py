"""The auditor resource: its public key and the parameters it verifies with."""
