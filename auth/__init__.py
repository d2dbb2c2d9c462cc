"""Who the caller is: server_list, the OMERO backend, session records and stores, SSO."""
