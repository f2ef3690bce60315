"""Task and queue names: the contract between the API (which sends tasks by name) and the workers."""

QUEUE_CPU = "cpu"
QUEUE_GPU = "gpu"  # verification embeds tokens; a GPU machine's worker consumes this queue

START_AUDIT = "coin.audit.start"
VERIFY_AUDIT = "coin.audit.verify"
EXPIRE_CHALLENGES = "coin.challenges.expire"
SWEEP_AUDITS = "coin.audits.sweep"
LINK_EVENTS = "coin.events.link"

QUEUE_OF_TASK = {
    START_AUDIT: QUEUE_CPU,
    VERIFY_AUDIT: QUEUE_GPU,
    EXPIRE_CHALLENGES: QUEUE_CPU,
    SWEEP_AUDITS: QUEUE_CPU,
    LINK_EVENTS: QUEUE_CPU,
}
