"""`scientist serve`: a web page to watch runs, read variants and approve edits."""
