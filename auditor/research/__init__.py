"""The research harness (DESIGN §6): traces, attacks, training and evaluation. Needs the
`research` extra; nothing in the protocol, the semantic checks or the service imports it."""
