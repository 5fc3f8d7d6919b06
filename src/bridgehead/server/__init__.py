"""HTTP server: app factory, routers, auth, metrics."""
