"""Browser tests of the staff dashboard (Playwright, Debian's Chromium)."""
