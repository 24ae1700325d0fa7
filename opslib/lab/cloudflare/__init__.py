"""The Cloudflare v4 API stand-in: store, request logic, HTTP server, lab service."""
