"""The auditor's staff: accounts, dashboard sign-in and sessions."""
