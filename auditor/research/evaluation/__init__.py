"""The evaluation harness (DESIGN §6): `run` audits honest and inflated traces through the whole
protocol, `summary` turns the outcomes into rates with intervals, `render` writes them as Markdown,
`plots` draws them, `report` writes all of it to a folder."""
