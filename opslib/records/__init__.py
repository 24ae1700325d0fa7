"""The record store: executed notebooks, their index, search, diff and the static site."""
