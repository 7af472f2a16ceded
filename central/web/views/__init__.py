"""The web application's pages and files, one module per part: accounts (log-in, staff), sessions (search,
the session page, playback, download), approvals, audit, fleet."""
