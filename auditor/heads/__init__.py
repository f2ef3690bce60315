"""Matching heads and verifiers for the semantic checks (DESIGN §3, checks 4, 5 and 8).

`models` holds the torch modules and the checkpoint format, `train` fits them from traces, `verifier`
turns per-block evidence into P(benign). Trained weights ship in `weights/`; see MODEL_CARD.md.
"""
