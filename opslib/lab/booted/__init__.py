"""Booted daemon hosts: a Debian 12 root file system booted with systemd-nspawn, reached over
SSH."""
