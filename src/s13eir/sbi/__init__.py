"""N5g-eir (TS 29.511 EquipmentIdentityCheck) over HTTP/2, and NRF registration (TS 29.510).
See README.md in this directory. Import the modules themselves: this face is empty, so
that the pure ones (``identifiers``, ``n5g_eir``) come without h2, httpx and JWT.
"""
