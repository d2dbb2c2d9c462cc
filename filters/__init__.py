"""What the caller may do: canonical paths, URL rules, CORS, trusted proxies."""
