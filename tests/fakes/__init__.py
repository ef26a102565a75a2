"""Loopback fakes of outside vendors, each implementing its documented wire protocol and verifying the
authentication it is sent (signature, JWT, token) from test credentials (not test modules)."""
