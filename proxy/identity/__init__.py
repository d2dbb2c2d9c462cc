"""Who is asking: the authentication chain and its authenticators, each answering with a
Principal or "not me"."""
