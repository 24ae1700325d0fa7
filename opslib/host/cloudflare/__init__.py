"""Cloudflare DNS: the API client and a VM's AAAA record."""
