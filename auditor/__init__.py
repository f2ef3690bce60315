"""CoIn Audit protocol library: the byte-exact protocol of DESIGN §3 and the science behind it.

This package imports no web, database or queue code; `api/` and `workers/` are thin layers over it.
"""

PROTOCOL_VERSION = "coin/1"
