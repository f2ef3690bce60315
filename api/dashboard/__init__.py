"""The staff dashboard: server-rendered pages (Jinja2, htmx, plotly.js served from this app)."""
