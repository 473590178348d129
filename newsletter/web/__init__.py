"""What is served over HTTP: the public endpoint (one-click unsubscribe, confirmation,
manage page) in ``endpoint`` and the local preview server in ``preview_server``.
"""
