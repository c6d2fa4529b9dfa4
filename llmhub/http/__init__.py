"""The front door: the HTTP server, its framing and sockets, the route table and the stream pump."""
