"""An OMERO server simulator speaking real Ice with omero-py's generated classes.

Real omero-py and real OMERO.web talk to it; tests start it with the ``omero_sim`` fixture
(fixture.py) and steer it through its control channel (control.py).
"""
