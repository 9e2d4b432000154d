"""Example applications built on Sagaway: what a user copies to write their own."""
