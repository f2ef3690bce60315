"""`coin demo`: simulated providers (`providers`) push real traces through the REST API (`run`)."""

# The trace files the demo reads from its traces folder (here, not in `providers`, so that `coin demo`
# can name and check them before it imports the protocol and the model).
DEMO_TRACE_FILES = ("thinkingllms_math_r1distill_qwq.jsonl", "thinkingllms_general_r1distill.jsonl")
