"""Forwarding to OMERO.web: send, relay, header and cookie rewriting, the handoff, renewal."""
