"""The live monitoring dashboard: a small aiohttp app that reads ClickHouse over its HTTP interface and draws its
own charts (no CDN, no chart library), with drill-down from a chart to the audit record of one request."""
