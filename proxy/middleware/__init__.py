"""What wraps every request: its scope and access log, the error boundary, CORS preflights,
and the headers every response gets."""
