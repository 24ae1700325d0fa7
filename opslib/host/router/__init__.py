"""The room router's parts: radvd (router advertisements for SLAAC) and the routes of the
room's /48 (the room's /64 on its segment, each daemon host's /64 via that host)."""
