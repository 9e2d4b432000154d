"""Participant SDK and the example services (inventory, payments, shipping)."""
