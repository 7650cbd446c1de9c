"""Administrator pages: staff accounts, invitations and API tokens."""
