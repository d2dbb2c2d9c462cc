"""The public answer cache: answers served to the ONE shared public user, kept in memory and
optionally on disk, so that published images are served without OMERO.web.

This package knows nothing of HTTP servers: proxy/forwarding/cached.py serves from it."""
