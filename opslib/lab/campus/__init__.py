"""The campus the hosts sit on: NetReg's DHCP and the tunnel broker's end."""
