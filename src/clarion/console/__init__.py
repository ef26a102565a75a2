"""The operators' console at ``/console``: server-rendered pages over the same use cases as the API, for operators,
reviewers and customer support. A page parses its form, calls the use case the API route calls, and renders; it
holds no business rule. ``app.create`` builds it; ``pages`` has the routes, one section per page."""
